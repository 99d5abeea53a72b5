r"""
The embedded default model: a small CLIP trained on the chest phantom.

``phantom_clip()`` loads a transformers :class:`~transformers.CLIPModel`
(112 px input, 8 px patches, so a 14 x 14 patch grid) and its processor from
files shipped inside the package (``config.json``, ``model.safetensors``,
``tokenizer.json`` and the processor configs). Loading never touches the
network and never unpickles anything: weights are safetensors, everything
else is JSON.

The text tower uses a word-level vocabulary built from the phantom's phrase
templates. Token ids: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3.
The end-of-text id is deliberately not 2: transformers pools the text
embedding at the first ``eos_token_id`` position unless that id is 2 (then it
falls back to the arg-max of the ids).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "MODEL_DIR",
    "CONTEXT_LENGTH",
    "PhantomCLIPProcessor",
    "build_tokenizer",
    "build_processor",
    "build_config",
    "phantom_clip",
    "evaluate_zero_shot",
]

MODEL_DIR = Path(__file__).resolve().parent / "phantom_clip"
CONTEXT_LENGTH = 16
IMAGE_SIZE = 112
PATCH_SIZE = 8
IMAGE_MEAN = (0.45, 0.45, 0.45)
IMAGE_STD = (0.25, 0.25, 0.25)
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
EXTRA_WORDS = ("no", "acute", "finding", "findings", "both", "and", "of", "with", "the")


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    r"""Temporarily set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _words(phrases: Sequence[str]) -> List[str]:
    r"""Sorted word-level vocabulary (lower case, punctuation split off)."""
    import re

    words = set(EXTRA_WORDS)
    for p in phrases:
        words.update(re.findall(r"\w+|[^\w\s]+", p.lower()))
    return sorted(words)


def build_tokenizer(phrases: Optional[Sequence[str]] = None) -> Any:
    r"""
    Build the word-level CLIP tokenizer from the phantom phrase templates.

    Args:

        phrases (sequence of str, optional): Phrases whose words form the
            vocabulary. Default: every phantom phrase
            (:func:`captum_matex.data.phantom.all_phrases`).

    Returns:
        transformers.PreTrainedTokenizerFast: Lower-cases, splits words and
        punctuation, wraps the ids in ``<bos> ... <eos>``, pads on the right
        with ``<pad>`` and truncates to :data:`CONTEXT_LENGTH` tokens.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from captum_matex.data.phantom import all_phrases

    words = _words(all_phrases() if phrases is None else phrases)
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=CONTEXT_LENGTH,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def _to_pil(image: Any) -> Any:
    r"""
    Convert one grayscale or RGB image (PIL, numpy or torch) to a PIL image.

    Float arrays are read as intensities in ``[0, 1]``; integer arrays as
    ``0..255``. Shapes ``(H, W)``, ``(1, H, W)``, ``(H, W, 1)``,
    ``(3, H, W)`` and ``(H, W, 3)`` are accepted.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"image must be (H, W), (1, H, W), (H, W, 1), (3, H, W) or (H, W, 3); "
            f"got shape {tuple(arr.shape)}"
        )
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
        arr = np.rint(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0)
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def _processor_base() -> type:
    r"""The transformers ``CLIPProcessor`` class."""
    from transformers import CLIPProcessor

    return CLIPProcessor


class PhantomCLIPProcessor(_processor_base()):  # type: ignore[misc]
    r"""
    ``CLIPProcessor`` that also accepts grayscale numpy arrays and tensors.

    Images are converted to 8-bit RGB PIL images before the standard CLIP
    image pipeline (resize, centre crop, rescale, normalise), so a phantom
    sample's ``image`` tensor, a ``(H, W)`` numpy radiograph and a PIL image
    all give the same ``pixel_values``. Text is padded to the longest phrase
    and truncated to the model's context length by default.

    Args:

        image_processor: A CLIP image processor.
        tokenizer: The phantom word-level tokenizer.
    """

    def __call__(  # type: ignore[override]
        self,
        images: Any = None,
        text: Union[str, List[str], None] = None,
        **kwargs: Any,
    ) -> Any:
        r"""
        Tokenise ``text`` and preprocess ``images`` like ``CLIPProcessor``.

        Args:

            images (image or list of images, optional): PIL images, numpy
                arrays or tensors (grayscale or RGB).
            text (str or list of str, optional): Phrases.
            **kwargs: Forwarded to ``CLIPProcessor.__call__`` (for example
                ``return_tensors="pt"``).

        Returns:
            transformers.BatchEncoding: ``input_ids``, ``attention_mask``
            and/or ``pixel_values``.
        """
        if images is not None:
            single = not isinstance(images, (list, tuple))
            if single and isinstance(images, torch.Tensor) and images.ndim == 4:
                images, single = list(images), False
            if single and isinstance(images, np.ndarray) and images.ndim == 4:
                images, single = list(images), False
            images = [_to_pil(im) for im in ([images] if single else images)]
        if text is not None:
            kwargs.setdefault("padding", True)
            kwargs.setdefault("truncation", True)
        return super().__call__(images=images, text=text, **kwargs)


def _image_processor() -> Any:
    r"""CLIP image processor for the 112 px phantom model (PIL backend)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import (
            CLIPImageProcessorPil as ImageProcessor,
        )
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )


def build_processor(tokenizer: Any = None) -> PhantomCLIPProcessor:
    r"""
    Build the processor (image processor + word-level tokenizer).

    Args:

        tokenizer (optional): Tokenizer to use. Default:
            :func:`build_tokenizer`.

    Returns:
        PhantomCLIPProcessor: The processor.
    """
    return PhantomCLIPProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
    )


def tower_settings(
    vocab_size: int, vision_width: int, vision_layers: int, text_width: int, text_layers: int
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    r"""
    The text and vision tower settings the embedded phantom models share
    (word-level vocabulary, 16-token context, 112 px input, 8 px patches).

    Returns:
        tuple: ``(text, vision)`` keyword arguments for the towers' configs.
    """
    text = dict(
        vocab_size=vocab_size, hidden_size=text_width, intermediate_size=4 * text_width,
        num_hidden_layers=text_layers, num_attention_heads=4,
        max_position_embeddings=CONTEXT_LENGTH, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    vision = dict(
        hidden_size=vision_width, intermediate_size=4 * vision_width,
        num_hidden_layers=vision_layers, num_attention_heads=4, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE, num_channels=3,
    )
    return text, vision


def build_config(
    vocab_size: int,
    vision_width: int = 128,
    vision_layers: int = 4,
    text_width: int = 128,
    text_layers: int = 2,
    projection_dim: int = 128,
) -> Any:
    r"""
    Configuration of the phantom CLIP (14 x 14 patch grid).

    Args:

        vocab_size (int): Tokenizer vocabulary size.
        vision_width (int, optional): Vision hidden size. Default: 128
        vision_layers (int, optional): Vision blocks. Default: 4
        text_width (int, optional): Text hidden size. Default: 128
        text_layers (int, optional): Text blocks. Default: 2
        projection_dim (int, optional): Joint embedding size. Default: 128

    Returns:
        transformers.CLIPConfig: The configuration.
    """
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text_settings, vision_settings = tower_settings(
        vocab_size, vision_width, vision_layers, text_width, text_layers
    )
    text = CLIPTextConfig(**text_settings, projection_dim=projection_dim)
    vision = CLIPVisionConfig(**vision_settings, projection_dim=projection_dim)
    return CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=projection_dim,
        logit_scale_init_value=float(np.log(1 / 0.07)),
    )


def phantom_clip(
    path: Optional[Union[str, os.PathLike]] = None,
    attn_implementation: str = "eager",
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[Any, PhantomCLIPProcessor]:
    r"""
    Load the embedded phantom CLIP model and its processor, offline.

    Only package files are read (safetensors weights, JSON configs); the
    Hugging Face hub is never contacted.

    Args:

        path (str or PathLike, optional): Directory to load from. Default:
            the files shipped in ``captum_matex/zoo/phantom_clip``.
        attn_implementation (str, optional): Attention backend passed to
            transformers; ``"eager"`` materialises attention probabilities,
            which attention-based explanations need. Default: ``"eager"``
        device (str or torch.device, optional): Device to move the model
            to. Default: CPU.

    Returns:
        tuple: ``(model, processor)``: a :class:`transformers.CLIPModel` in
        eval mode and a :class:`PhantomCLIPProcessor`.

    Examples::

        >>> model, processor = phantom_clip()
        >>> batch = processor(text=["left pleural effusion"],
        ...                   images=[sample.image], return_tensors="pt")
        >>> out = model(**batch)
    """
    from transformers import CLIPModel

    return load_embedded(path or MODEL_DIR, CLIPModel, PhantomCLIPProcessor, "",
                         attn_implementation, device)


def load_embedded(
    directory: Union[str, os.PathLike],
    model_class: Any,
    processor_class: Any,
    train_flags: str,
    attn_implementation: str,
    device: Optional[Union[str, torch.device]],
) -> Tuple[Any, Any]:
    r"""
    Load an embedded phantom model of ``model_class`` and its processor
    (``processor_class`` around the saved tokenizer and image processor)
    from ``directory``, offline, safetensors only.

    Raises:
        FileNotFoundError: ``directory`` holds no ``model.safetensors``; the
            message names the training command (with ``train_flags``).
    """
    from transformers import CLIPProcessor

    directory = Path(directory)
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {directory}; train one with "
            f"`python tools/train_phantom.py {train_flags}--out DIR` (from a source checkout) "
            "and pass path=DIR"
        )
    with _offline():
        model = model_class.from_pretrained(
            str(directory),
            local_files_only=True,
            use_safetensors=True,
            attn_implementation=attn_implementation,
        )
        base = CLIPProcessor.from_pretrained(str(directory), local_files_only=True)
    processor = processor_class(image_processor=base.image_processor, tokenizer=base.tokenizer)
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def save_pretrained(model: Any, processor: Any, directory: Union[str, os.PathLike]) -> None:
    r"""
    Save model (safetensors) and processor (JSON) so :func:`phantom_clip`
    can load them.

    Args:

        model (transformers.CLIPModel): The model.
        processor (PhantomCLIPProcessor): Its processor.
        directory (str or PathLike): Output directory (created).
    """
    from transformers import CLIPProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    plain = CLIPProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer)
    plain.save_pretrained(str(directory))


@torch.no_grad()
def _embed_texts(model: Any, processor: Any, phrases: Sequence[str]) -> torch.Tensor:
    r"""L2-normalised text embeddings of ``phrases``."""
    device = next(model.parameters()).device
    enc = processor(text=list(phrases), return_tensors="pt")
    mask = enc.get("attention_mask")  # None for a processor without one (SigLIP)
    out = model.get_text_features(
        input_ids=enc["input_ids"].to(device),
        attention_mask=None if mask is None else mask.to(device),
    )
    out = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(out, dim=-1)


@torch.no_grad()
def _embed_images(model: Any, processor: Any, images: Sequence[Any]) -> torch.Tensor:
    r"""L2-normalised image embeddings of ``images``."""
    device = next(model.parameters()).device
    enc = processor(images=list(images), return_tensors="pt")
    out = model.get_image_features(pixel_values=enc["pixel_values"].to(device))
    out = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(out, dim=-1)


def evaluate_zero_shot(
    model: Any,
    processor: Any,
    n: int = 500,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 64,
    dataset: Any = None,
) -> Dict[str, Any]:
    r"""
    Zero-shot grounding accuracy of a CLIP model on the chest phantom.

    Two tasks, scored by cosine similarity between image and phrase:

    - finding: pick the primary finding among one canonical phrase per
      finding (:func:`~captum_matex.data.phantom.candidate_phrases`, with the
      sample's side), leaving out other findings present in the image;
    - side: on samples whose primary finding is left- or right-sided, pick
      the true phrase over the same phrase with left and right swapped.

    Args:

        model (transformers.CLIPModel): Model to score.
        processor: Its processor (``processor(text=..., images=...)``).
        n (int, optional): Number of samples. Default: 500
        split (str, optional): Phantom split. Default: ``"test"``
        seed (int, optional): Phantom seed. Default: 0
        batch_size (int, optional): Images per forward pass. Default: 64
        dataset (optional): A :class:`~captum_matex.data.PhantomCXR` to use
            instead of ``PhantomCXR(split, seed, length=n)``.

    Returns:
        dict: ``finding_acc`` and ``side_acc`` (fractions), ``per_finding``
        (finding accuracy by finding), ``per_finding_side`` (side accuracy
        by finding), ``n`` and ``n_side`` (numbers of scored samples).
    """
    from captum_matex.data.phantom import FINDINGS, PhantomCXR, candidate_phrases, swap_laterality

    ds = dataset if dataset is not None else PhantomCXR(split=split, seed=seed, length=n)
    n = min(n, len(ds))
    was_training = model.training
    model.eval()
    hits: Dict[str, List[bool]] = {f: [] for f in FINDINGS}
    side_hits: Dict[str, List[bool]] = {}
    try:
        for start in range(0, n, batch_size):
            samples = [ds[i] for i in range(start, min(n, start + batch_size))]
            img = _embed_images(model, processor, [s.image for s in samples])
            tasks = [_sample_tasks(s, candidate_phrases, swap_laterality) for s in samples]
            phrases = sorted({p for names, cands, pair in tasks for p in list(cands) + list(pair)})
            table = dict(zip(phrases, _embed_texts(model, processor, phrases)))
            for s, e, (names, cands, pair) in zip(samples, img, tasks):
                scores = torch.stack([table[p] for p in cands]) @ e
                hits[s.finding].append(names[int(scores.argmax())] == s.finding)
                if pair:
                    side_hits.setdefault(s.finding, []).append(
                        bool(table[pair[0]] @ e > table[pair[1]] @ e)
                    )
    finally:
        model.train(was_training)
    return _summarise(hits, side_hits)


def _sample_tasks(
    sample: Any, candidate_phrases: Any, swap_laterality: Any
) -> Tuple[List[str], List[str], Tuple[str, ...]]:
    r"""
    Candidate findings and phrases, and the (true, swapped) phrase pair.

    Findings present in the image other than the primary one are left out of
    the candidates; the pair is empty unless the primary finding is left- or
    right-sided.
    """
    present = {r.finding for r in sample.findings[1:]} - {sample.finding}
    cands = {f: p for f, p in candidate_phrases(sample.laterality).items() if f not in present}
    pair: Tuple[str, ...] = ()
    if sample.laterality in ("left", "right"):
        pair = (sample.phrase, swap_laterality(sample.phrase))
    return list(cands), list(cands.values()), pair


def _summarise(hits: Dict[str, List[bool]], side_hits: Dict[str, List[bool]]) -> Dict[str, Any]:
    r"""Aggregate per-finding hit lists into accuracies."""
    all_hits = [h for v in hits.values() for h in v]
    all_side = [h for v in side_hits.values() for h in v]
    return {
        "finding_acc": float(np.mean(all_hits)) if all_hits else float("nan"),
        "side_acc": float(np.mean(all_side)) if all_side else float("nan"),
        "per_finding": {f: float(np.mean(v)) for f, v in hits.items() if v},
        "per_finding_side": {f: float(np.mean(v)) for f, v in side_hits.items() if v},
        "n": len(all_hits),
        "n_side": len(all_side),
    }
