r"""
The embedded phantom report model: a small LLaVA that writes findings.

``phantom_llava()`` loads a transformers
:class:`~transformers.LlavaForConditionalGeneration` and its processor from
files shipped inside the package (``phantom_llava/``: ``config.json``,
``model.safetensors``, ``generation_config.json``, ``tokenizer.json`` and
the processor configs), offline and without unpickling anything. It was
trained on :class:`~captum_matex.data.PhantomCXR` films by
``tools/train_phantom_llava.py`` (see ``phantom_llava/TRAINING.md``).

Architecture:

- vision tower: a :class:`~transformers.CLIPVisionModel` with exactly the
  phantom CLIP's vision settings (112 px input, 8 px patches, a 14 x 14
  grid, 4 blocks of width 128), initialised from the phantom CLIP's
  first-stage vision weights (before its pose fine-tuning) and fine-tuned
  with the decoder (at a tenth of its learning rate); ``vision_feature_layer=-1`` (the last block's output) and
  ``vision_feature_select_strategy="default"`` (the class token dropped), so
  an image is :data:`NUM_IMAGE_TOKENS` = 196 tokens, in row-major patch
  order (token ``k`` is patch row ``k // 14``, column ``k % 14``);
- the default LLaVA projector (linear, GELU, linear);
- a small Llama decoder (``model.model.language_model``, 3 blocks of width
  160, 4 heads, rotary positions), its output head ``model.lm_head`` tied to
  its input embeddings.

Sequence layout. The model was trained, with teacher-forced next-token
cross-entropy on the report and ``<eos>`` only, on::

    <bos> <image> x 196 findings : <report> <eos>

``<report>`` is :func:`report_text` of the film: the phrases of its
findings (primary first), each followed by ``.`` ("left pleural effusion .
enlarged cardiac silhouette ."), or :data:`NORMAL_REPORT` for a normal film.
Generation starts from the prompt part (:func:`prompt_ids`), which is what
``processor(images=..., text=PHANTOM_LLAVA_PROMPT)`` returns: positions 0
(``<bos>``), 1-196 (the image tokens; the projector's outputs replace their
embeddings) and 197-198 (``findings``, ``:``); the logits at position ``t``
predict token ``t + 1``, so the first report token is read from position
198. Sequences of a batch are padded on the right with an attention mask
(every prompt has the same length, so generation needs no padding).
Token ids (fixed by construction, checked when the tokenizer is built):

========================  =====================================
``<pad>``                 :data:`PAD_ID` = 0 (padding on the right)
``<unk>``                 1
``<bos>``                 :data:`BOS_ID` = 2
``<eos>``                 :data:`EOS_ID` = 3
``<image>``               :data:`IMAGE_TOKEN_ID` = 80
``findings :``            :data:`PROMPT_TOKEN_IDS` = ``(33, 82)``
``.`` (ends a sentence)   81
``left`` / ``right``      42 / 69 (``bilateral`` 18)
========================  =====================================

The vocabulary is the phantom CLIP's (ids 0-79 are the same words) extended
with ``<image>``, ``.``, ``:`` and the hyphenated words ``plate-like`` and
``band-like``, which stay whole so that a report decodes to itself
(``tokenizer.decode(ids, skip_special_tokens=True)`` gives back the report
text; the prompt decodes as ``findings :``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from captum_matex.zoo.phantom_clip import (
    MODEL_DIR as CLIP_DIR,
    IMAGE_SIZE,
    PATCH_SIZE,
    _image_processor,
    _offline,
    _to_pil,
    build_config as build_clip_config,
)

__all__ = [
    "MODEL_DIR",
    "PHANTOM_LLAVA_PROMPT",
    "NORMAL_REPORT",
    "NUM_IMAGE_TOKENS",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "IMAGE_TOKEN_ID",
    "PROMPT_TOKEN_IDS",
    "PhantomLlavaProcessor",
    "build_tokenizer",
    "build_llava_processor",
    "build_config",
    "init_vision_from_phantom_clip",
    "join_report",
    "report_text",
    "prompt_ids",
    "training_ids",
    "read_report",
    "score_report",
    "summarise_scores",
    "generate_reports",
    "evaluate_generation",
    "phantom_llava",
    "save_pretrained",
]

MODEL_DIR = Path(__file__).resolve().parent / "phantom_llava"
#: The prompt the model was trained to answer (tokens ``findings``, ``:``; the
#: tokenizer lower-cases, so this is also the generative adapters' default prompt)
PHANTOM_LLAVA_PROMPT = "Findings:"
#: The report of a film without findings
NORMAL_REPORT = "no acute cardiopulmonary process."
#: Image tokens per film: the 14 x 14 patch grid (class token dropped)
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3
IMAGE_TOKEN = "<image>"
#: Tokens appended to the phantom CLIP's vocabulary, in id order from 80
NEW_TOKENS = (IMAGE_TOKEN, ".", ":", "plate-like", "band-like")
IMAGE_TOKEN_ID = 80
PROMPT_TOKEN_IDS = (33, 82)
MAX_POSITIONS = 256


def build_tokenizer(clip_tokenizer_file: Union[str, os.PathLike, None] = None) -> Any:
    r"""
    Build the word-level report tokenizer from the phantom CLIP's vocabulary.

    Args:

        clip_tokenizer_file (str or PathLike, optional): The phantom CLIP's
            ``tokenizer.json`` whose vocabulary is extended. Default: the
            shipped one.

    Returns:
        transformers.PreTrainedTokenizerFast: Lower-cases, splits on white
        space and isolates ``.``, ``:`` and ``,``; prepends ``<bos>`` (no
        ``<eos>``: the prompt is left open for generation); ``<image>`` is a
        special token; pads on the right with ``<pad>``.

    Raises:
        ValueError: The ids of the special tokens or of the prompt are not
            the documented constants (a changed CLIP vocabulary).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    path = Path(clip_tokenizer_file or CLIP_DIR / "tokenizer.json")
    vocab: Dict[str, int] = dict(json.loads(path.read_text())["model"]["vocab"])
    for token in NEW_TOKENS:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[.:,]"), "isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False)
         for t in ("<pad>", "<unk>", "<bos>", "<eos>", IMAGE_TOKEN)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        clean_up_tokenization_spaces=True,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )
    got = (vocab["<pad>"], vocab["<bos>"], vocab["<eos>"], vocab[IMAGE_TOKEN],
           tuple(tokenizer(PHANTOM_LLAVA_PROMPT, add_special_tokens=False)["input_ids"]))
    want = (PAD_ID, BOS_ID, EOS_ID, IMAGE_TOKEN_ID, PROMPT_TOKEN_IDS)
    if got != want:
        raise ValueError(f"token ids {got} differ from the documented {want}")
    return tokenizer


def _processor_base() -> type:
    r"""The transformers ``LlavaProcessor`` class."""
    from transformers import LlavaProcessor

    return LlavaProcessor


class PhantomLlavaProcessor(_processor_base()):  # type: ignore[misc]
    r"""
    ``LlavaProcessor`` that also accepts grayscale numpy arrays and tensors.

    Images are converted to 8-bit RGB PIL images first, exactly as
    :class:`~captum_matex.zoo.phantom_clip.PhantomCLIPProcessor` does, so
    ``processor(images=[sample.image[0].numpy()], text=PHANTOM_LLAVA_PROMPT)``
    gives the phantom CLIP's ``pixel_values`` and the prompt with
    ``<image>`` expanded to :data:`NUM_IMAGE_TOKENS` tokens. A text without
    ``<image>`` gets it prepended (one per image). Several texts are padded
    on the right; batched generation needs left padding, see
    :func:`generate_reports`.

    Args:

        image_processor: A CLIP image processor (the phantom CLIP's).
        tokenizer: The report tokenizer (:func:`build_tokenizer`).
        **kwargs: Forwarded to ``LlavaProcessor`` (``patch_size``,
            ``vision_feature_select_strategy``,
            ``num_additional_image_tokens``).
    """

    def __call__(  # type: ignore[override]
        self,
        images: Any = None,
        text: Union[str, List[str], None] = None,
        **kwargs: Any,
    ) -> Any:
        r"""
        Preprocess ``images`` and tokenise ``text`` like ``LlavaProcessor``.

        Args:

            images (image or list of images, optional): PIL images, numpy
                arrays or tensors (grayscale or RGB).
            text (str or list of str, optional): Prompts; ``<image>`` is
                prepended where missing.
            **kwargs: Forwarded to ``LlavaProcessor.__call__`` (for example
                ``return_tensors="pt"``).

        Returns:
            transformers.BatchFeature: ``input_ids``, ``attention_mask``
            and/or ``pixel_values``.
        """
        if images is not None:
            single = not isinstance(images, (list, tuple))
            if single and isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
                images, single = list(images), False
            images = [_to_pil(im) for im in ([images] if single else images)]
        if text is not None and images is not None:
            texts = [text] if isinstance(text, str) else list(text)
            texts = [t if IMAGE_TOKEN in t else IMAGE_TOKEN + t for t in texts]
            text = texts[0] if isinstance(text, str) else texts
        if text is not None:
            kwargs.setdefault("padding", True)
        return super().__call__(images=images, text=text, **kwargs)


def build_llava_processor(tokenizer: Any = None) -> PhantomLlavaProcessor:
    r"""
    Build the processor: the phantom CLIP's image processor, the report
    tokenizer and LLaVA's expansion of ``<image>`` to 196 tokens.

    Args:

        tokenizer (optional): Tokenizer to use. Default:
            :func:`build_tokenizer`.

    Returns:
        PhantomLlavaProcessor: The processor.
    """
    return PhantomLlavaProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def build_config(
    vocab_size: int,
    text_width: int = 160,
    text_layers: int = 3,
    text_heads: int = 4,
) -> Any:
    r"""
    Configuration of the phantom LLaVA: the phantom CLIP's vision tower, the
    default projector and a small Llama decoder.

    Args:

        vocab_size (int): Tokenizer vocabulary size.
        text_width (int, optional): Decoder hidden size. Default: 160
        text_layers (int, optional): Decoder blocks. Default: 3
        text_heads (int, optional): Decoder attention heads. Default: 4

    Returns:
        transformers.LlavaConfig: The configuration.
    """
    from transformers import LlamaConfig, LlavaConfig

    vision = build_clip_config(vocab_size=80).vision_config
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=text_width,
        intermediate_size=4 * text_width,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_heads,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=True,
    )
    return LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        image_seq_length=NUM_IMAGE_TOKENS,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=True,
    )


def init_vision_from_phantom_clip(model: Any, clip: Any = None) -> None:
    r"""
    Copy the phantom CLIP's vision tower weights into a LLaVA model.

    Args:

        model (transformers.LlavaForConditionalGeneration): Model built
            from :func:`build_config`.
        clip (transformers.CLIPModel, optional): Source. Default: the
            shipped :func:`~captum_matex.zoo.phantom_clip.phantom_clip`.
    """
    if clip is None:
        from captum_matex.zoo.phantom_clip import phantom_clip

        clip = phantom_clip()[0]
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())


def join_report(phrases: Sequence[str]) -> str:
    r"""
    A report from finding phrases.

    Args:

        phrases (sequence of str): The phrases of a film's findings, primary
            first; empty for a normal film.

    Returns:
        str: Each phrase ending in ``.``, joined by a space;
        :data:`NORMAL_REPORT` when there is none.
    """
    return " ".join(p + "." for p in phrases) if phrases else NORMAL_REPORT


def report_text(sample: Any) -> str:
    r"""
    The report a phantom film is trained to produce.

    Args:

        sample (PhantomSample): A phantom sample.

    Returns:
        str: :func:`join_report` of its findings' phrases (primary first;
        a normal film's phrase is left out).
    """
    return join_report([r.phrase for r in sample.findings if r.finding != "normal"])


def prompt_ids() -> List[int]:
    r"""
    Token ids that generation starts from: ``<bos>``, 196 ``<image>`` and
    the prompt ``findings :``.

    Returns:
        list of int: The ``1 + 196 + 2`` ids.
    """
    return [BOS_ID] + [IMAGE_TOKEN_ID] * NUM_IMAGE_TOKENS + list(PROMPT_TOKEN_IDS)


def training_ids(tokenizer: Any, report: str) -> Tuple[List[int], List[int]]:
    r"""
    Token ids and labels of one training sequence,
    ``<bos> <image>*196 findings : <report> <eos>``.

    Args:

        tokenizer: The report tokenizer.
        report (str): Report text (:func:`report_text`).

    Returns:
        tuple: ``(input_ids, labels)``; labels are ``-100`` on ``<bos>``,
        the image tokens and the prompt, and equal the ids on the report
        and ``<eos>``.
    """
    head = prompt_ids()
    tail = list(tokenizer(report, add_special_tokens=False)["input_ids"]) + [EOS_ID]
    return head + tail, [-100] * len(head) + tail


def phantom_llava(
    path: Optional[Union[str, os.PathLike]] = None,
    attn_implementation: str = "eager",
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[Any, PhantomLlavaProcessor]:
    r"""
    Load the embedded phantom LLaVA report model and its processor, offline.

    Only package files are read (safetensors weights, JSON configs); the
    Hugging Face hub is never contacted.

    Args:

        path (str or PathLike, optional): Directory to load from. Default:
            the files shipped in ``captum_matex/zoo/phantom_llava``.
        attn_implementation (str, optional): Attention backend passed to
            transformers (vision tower and decoder). Default: ``"eager"``
        device (str or torch.device, optional): Device to move the model
            to. Default: CPU.

    Returns:
        tuple: ``(model, processor)``: a
        :class:`transformers.LlavaForConditionalGeneration` in eval mode and
        a :class:`PhantomLlavaProcessor`.

    Raises:
        FileNotFoundError: The directory holds no ``model.safetensors``.

    Examples::

        >>> model, processor = phantom_llava()
        >>> batch = processor(images=[sample.image[0].numpy()],
        ...                   text=PHANTOM_LLAVA_PROMPT, return_tensors="pt")
        >>> ids = model.generate(**batch, max_new_tokens=24, do_sample=False)
        >>> processor.tokenizer.decode(ids[0, batch["input_ids"].shape[1]:],
        ...                            skip_special_tokens=True)
        'left pleural effusion.'
    """
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    directory = Path(path or MODEL_DIR)
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {directory}; train one with "
            "`python tools/train_phantom_llava.py --out DIR` (from a source checkout) and pass path=DIR"
        )
    with _offline():
        model = LlavaForConditionalGeneration.from_pretrained(
            str(directory),
            local_files_only=True,
            use_safetensors=True,
            attn_implementation=attn_implementation,
        )
        base = LlavaProcessor.from_pretrained(str(directory), local_files_only=True)
    processor = PhantomLlavaProcessor(
        image_processor=base.image_processor,
        tokenizer=base.tokenizer,
        patch_size=base.patch_size,
        vision_feature_select_strategy=base.vision_feature_select_strategy,
        num_additional_image_tokens=base.num_additional_image_tokens,
    )
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def save_pretrained(model: Any, processor: Any, directory: Union[str, os.PathLike]) -> None:
    r"""
    Save model (safetensors), generation settings and processor (JSON) so
    :func:`phantom_llava` can load them.

    Args:

        model (transformers.LlavaForConditionalGeneration): The model.
        processor (PhantomLlavaProcessor): Its processor.
        directory (str or PathLike): Output directory (created).
    """
    from transformers import GenerationConfig, LlavaProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        do_sample=False, max_new_tokens=24,
    )
    model.save_pretrained(str(directory), safe_serialization=True)
    LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        num_additional_image_tokens=processor.num_additional_image_tokens,
    ).save_pretrained(str(directory))


# --------------------------------------------------------------------------
# reading and scoring reports
# --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _phantom_phrase_findings() -> Dict[str, str]:
    r"""Every phantom phrase (and :data:`NORMAL_REPORT`'s sentence) to its finding."""
    from captum_matex.data.phantom import BILATERAL_TEMPLATES, TEMPLATES, _fill

    out = {NORMAL_REPORT.rstrip("."): "normal"}
    for table in (TEMPLATES, BILATERAL_TEMPLATES):
        for finding, templates in table.items():
            for t in templates:
                for side in ("left", "right", None):
                    for zone in ("upper", "mid", "lower"):
                        for size in ("small", "moderate", "large", "mild"):
                            out[" ".join(_fill(t, side, zone, size).split())] = finding
    return out


#: Finding words of :mod:`captum_matex.phrases` that name a phantom finding
#: under another name
_PHRASE_FINDING = {"opacity": "consolidation", "pneumonia": "consolidation"}


def read_report(text: str) -> List[Tuple[Optional[str], Optional[str]]]:
    r"""
    The findings a report names: one ``(finding, laterality)`` per sentence.

    A sentence that is a phantom phrase gets the phantom finding of its
    template (the phantom's own phrase table, so "fluid at the left base" is
    an effusion); any other sentence gets the finding word that
    :func:`captum_matex.phrases.parse_phrase` reads in it (``opacity`` counts
    as consolidation), or ``None`` when there is none or
    :func:`captum_matex.phrases.is_negated` says it is denied. The
    laterality is :func:`captum_matex.phrases.laterality` of the sentence.
    Normal sentences read as ``("normal", None)``.

    Args:

        text (str): Generated report.

    Returns:
        list of tuple: ``(finding or None, laterality or None)`` per
        non-empty sentence, in order.
    """
    from captum_matex.phrases import is_negated, laterality, parse_phrase

    table = _phantom_phrase_findings()
    out: List[Tuple[Optional[str], Optional[str]]] = []
    for sentence in text.split("."):
        sentence = " ".join(sentence.lower().split())
        if not sentence:
            continue
        finding = table.get(sentence)
        if finding is None and not is_negated(sentence):
            word = parse_phrase(sentence).finding
            finding = _PHRASE_FINDING.get(word, word)
        side = None if finding == "normal" else laterality(sentence)
        out.append((finding, side))
    return out


def _names(read: Sequence[Tuple[Optional[str], Optional[str]]], finding: str,
           side: Optional[str]) -> bool:
    r"""Whether a read report names ``finding`` (with ``side`` if it has one)."""
    from captum_matex.data.phantom import LATERALISED

    sided = finding in LATERALISED
    return any(f == finding and (not sided or s == side) for f, s in read)


def score_report(report: str, findings: Sequence[Tuple[str, Optional[str]]]) -> Dict[str, Any]:
    r"""
    Score one generated report against a film's findings.

    Args:

        report (str): Generated report.
        findings (sequence of tuple): The film's ``(finding, laterality)``
            pairs, primary first (``[("normal", None)]`` for a normal film).

    Returns:
        dict: ``normal`` (the film is normal), ``correct`` (normal film:
        the report names no finding; otherwise it names the primary finding
        and, for a sided finding, its side), ``finding`` (names the primary
        finding, side ignored), ``secondary`` (one bool per further finding:
        named with its side), ``hallucinated`` (names a finding that is not
        on the film).
    """
    read = read_report(report)
    named = {f for f, _ in read if f not in (None, "normal")}
    primary, side = findings[0]
    if primary == "normal":
        return {"normal": True, "correct": not named, "finding": not named,
                "secondary": [], "hallucinated": bool(named)}
    return {
        "normal": False,
        "correct": _names(read, primary, side),
        "finding": primary in named,
        "secondary": [_names(read, f, s) for f, s in findings[1:]],
        "hallucinated": bool(named - {f for f, _ in findings}),
    }


def summarise_scores(scores: Sequence[Dict[str, Any]], primaries: Sequence[str]) -> Dict[str, Any]:
    r"""
    Aggregate :func:`score_report` results.

    Args:

        scores (sequence of dict): One :func:`score_report` result per film.
        primaries (sequence of str): Each film's primary finding.

    Returns:
        dict: ``finding_side_acc`` (films with a finding whose report names
        it and its side), ``finding_acc`` (side ignored), ``normal_acc``
        (normal films whose report names no finding), ``secondary_recall``,
        ``hallucination_rate`` (films with a finding whose report names one
        that is not there), ``per_finding`` (``finding_side_acc`` by primary
        finding), ``n_finding``, ``n_normal`` and ``n_secondary``.
    """

    def rate(v: Sequence[bool]) -> float:
        return float(np.mean(v)) if len(v) else float("nan")

    abnormal = [(s, f) for s, f in zip(scores, primaries) if not s["normal"]]
    normal = [s for s in scores if s["normal"]]
    second = [h for s, _ in abnormal for h in s["secondary"]]
    per: Dict[str, List[bool]] = {}
    for s, f in abnormal:
        per.setdefault(f, []).append(s["correct"])
    return {
        "finding_side_acc": rate([s["correct"] for s, _ in abnormal]),
        "finding_acc": rate([s["finding"] for s, _ in abnormal]),
        "normal_acc": rate([s["correct"] for s in normal]),
        "secondary_recall": rate(second),
        "hallucination_rate": rate([s["hallucinated"] for s, _ in abnormal]),
        "per_finding": {f: rate(v) for f, v in sorted(per.items())},
        "n_finding": len(abnormal),
        "n_normal": len(normal),
        "n_secondary": len(second),
    }


@torch.no_grad()
def generate_reports(
    model: Any,
    processor: Any,
    images: Sequence[Any] = (),
    max_new_tokens: int = 24,
    pixel_values: Optional[torch.Tensor] = None,
) -> List[str]:
    r"""
    Greedy reports for a batch of films, from the trained prompt.

    Every film's prompt has the same length (:func:`prompt_ids`), so a
    batch needs no padding.

    Args:

        model (transformers.LlavaForConditionalGeneration): The model.
        processor (PhantomLlavaProcessor): Its processor.
        images (sequence, optional): Films (anything the processor takes).
        max_new_tokens (int, optional): Generation budget; 24 covers two
            findings. Default: 24
        pixel_values (torch.Tensor, optional): Preprocessed ``(B, 3, 112,
            112)`` pixels to use instead of ``images``.

    Returns:
        list of str: One decoded report per film.
    """
    param = next(model.parameters())
    if pixel_values is None:
        pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    ids = torch.tensor([prompt_ids()] * len(pixel_values), device=param.device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=pixel_values.to(param.device, param.dtype),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return processor.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def evaluate_generation(
    model: Any,
    processor: Any,
    split: str = "test",
    seed: int = 1,
    n: int = 400,
    batch_size: int = 50,
    max_new_tokens: int = 24,
    dataset: Any = None,
) -> Dict[str, Any]:
    r"""
    Greedy report accuracy on phantom films.

    Each film's report is generated from the trained prompt
    (:func:`generate_reports`), read with :func:`read_report` and scored
    with :func:`score_report`.

    Args:

        model (transformers.LlavaForConditionalGeneration): Model to score.
        processor (PhantomLlavaProcessor): Its processor.
        split (str, optional): Phantom split. Default: ``"test"``
        seed (int, optional): Phantom seed; the shipped model was trained
            and selected on seed 0, so seed 1 is unseen. Default: 1
        n (int, optional): Number of films. Default: 400
        batch_size (int, optional): Films per generation call. Default: 50
        max_new_tokens (int, optional): Generation budget. Default: 24
        dataset (optional): A :class:`~captum_matex.data.PhantomCXR` to use
            instead of ``PhantomCXR(split, seed, length=n)``.

    Returns:
        dict: :func:`summarise_scores` of the films, plus ``exact_match``
        (reports identical to :func:`report_text`, the training target, so
        template, zone and size words included), ``split``, ``seed``, ``n``
        and ``examples`` (the first ten targets and reports).
    """
    from captum_matex.data.phantom import PhantomCXR

    ds = dataset if dataset is not None else PhantomCXR(split=split, seed=seed, length=n)
    n = min(n, len(ds))
    was_training = model.training
    model.eval()
    scores, primaries, exact, examples = [], [], [], []
    try:
        for start in range(0, n, batch_size):
            samples = [ds[i] for i in range(start, min(n, start + batch_size))]
            reports = generate_reports(model, processor, [s.image for s in samples],
                                       max_new_tokens=max_new_tokens)
            for s, rep in zip(samples, reports):
                scores.append(score_report(rep, [(r.finding, r.laterality) for r in s.findings]))
                primaries.append(s.finding)
                exact.append(rep == report_text(s))
                if len(examples) < 10:
                    examples.append({"target": report_text(s), "generated": rep})
    finally:
        model.train(was_training)
    return {
        **summarise_scores(scores, primaries),
        "exact_match": float(np.mean(exact)),
        "split": split,
        "seed": getattr(ds, "seed", seed),
        "n": n,
        "examples": examples,
    }
