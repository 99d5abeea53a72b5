"""Loading a user's vision-language model and its processor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from captum_matex.data.geometry import InputSpec

#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

#: Name prefixes open_clip resolves: the Hugging Face hub and a local folder.
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")

#: Names of the embedded models (shipped in the package) -> their loader in :mod:`captum_matex.zoo`
EMBEDDED = {
    "phantom-clip": "phantom_clip",
    "phantom-siglip": "phantom_siglip",
    "phantom-llava": "phantom_llava",
}
EMBEDDED_DEFAULT = "phantom-clip"

#: What ``--model`` accepts on the command line (:func:`load_model`).
MODEL_HELP = (
    "an embedded model (phantom-clip, phantom-siglip, phantom-llava), a transformers "
    "CLIP/SigLIP/SigLIP 2 or LLaVA/PaliGemma/Gemma 3 directory (safetensors weights) or hub "
    "name, or an open_clip model (hf-hub:NAME, "
    "local-dir:PATH or a folder with open_clip_config.json; needs the openclip extra); "
    "default: the embedded phantom CLIP"
)


class ModelLoadError(RuntimeError):
    r"""A model could not be loaded; the message says from where and why."""


def _check_local(source: str) -> None:
    r"""Refuse a local path that is missing, not a directory or holds only pickled weights."""
    local = Path(source)
    looks_local = local.exists() or source.startswith((".", "/", "~"))
    if not looks_local:
        return
    if not local.exists():
        raise ModelLoadError(
            f"{source}: no such model directory; pass a directory saved with save_pretrained "
            "or a hub name such as openai/clip-vit-base-patch16"
        )
    if not local.is_dir():
        raise ModelLoadError(f"{source}: not a model directory (it is a file); pass its folder")
    pickles = sorted(p.name for p in local.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(local.glob("*.safetensors")):
        raise ModelLoadError(
            f"{source} holds only pickled weights ({', '.join(pickles[:3])}), which can run "
            "code when loaded; matex reads safetensors only. Convert them once where you trust "
            "the file: CLIPModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
        )


#: transformers ``model_type`` -> the dual-encoder class that loads it
DUAL_ENCODERS = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model"}
#: transformers ``model_type`` -> the image-to-text class that loads it (LLaVA-Med and
#: MAIRA-2 conversions are ``llava``; MedGemma is ``gemma3``)
GENERATIVE = {
    "llava": "LlavaForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
}
#: every ``model_type`` :func:`load_transformers` loads
LOADABLE = {**DUAL_ENCODERS, **GENERATIVE}


def load_transformers(name_or_path: str | Path, device: str = "cpu") -> tuple[nn.Module, Any]:
    r"""Load a transformers dual encoder (CLIP, SigLIP such as MedSigLIP-448,
    SigLIP 2) or image-to-text model (LLaVA, PaliGemma, Gemma 3 such as
    MedGemma) and its processor, with eager attention.

    The class is chosen from the checkpoint's ``config.json``
    (``model_type``: :data:`DUAL_ENCODERS`, :data:`GENERATIVE`), never from
    its name. Weights are
    read from safetensors only (``use_safetensors=True``): a checkpoint that
    only has pickled weights (``pytorch_model.bin``, ``.pt``) is refused,
    never unpickled.

    Args:
        name_or_path: a local directory saved with ``save_pretrained`` or a
            downloaded hub snapshot (what the tests and offline users use),
            or a hub name such as ``"openai/clip-vit-base-patch16"`` or
            ``"google/medsiglip-448"`` (needs internet).
        device: where to put the model.

    Returns:
        ``(model, processor)``; the model is in eval mode.

    Raises:
        ModelLoadError: the directory is missing, holds only pickled
            weights, holds a model type that is not a supported dual encoder,
            or no image processor.
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    source = str(name_or_path)
    _check_local(source)
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
        if model_type not in LOADABLE:
            raise ModelLoadError(
                f"{source!r} holds a {model_type!r} model; matex loads the dual encoders "
                f"{sorted(DUAL_ENCODERS)} and the image-to-text models {sorted(GENERATIVE)} "
                "(load others yourself and pass an adapter)"
            )
        model_class = getattr(transformers, LOADABLE[model_type])
        model = model_class.from_pretrained(source, attn_implementation="eager",
                                            use_safetensors=True)
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load a vision-language model and its processor from {source!r}: {exc}"
        ) from exc
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{source!r} holds no image processor ({type(processor).__name__} was "
            "found): save the checkpoint's processor with save_pretrained into the "
            "same directory"
        )
    return model.to(device).eval(), processor


#: the earlier name of :func:`load_transformers`, which loaded CLIP only
load_clip = load_transformers


@dataclass
class OpenCLIPProcessor:
    r"""An open_clip model's tokenizer and evaluation preprocessing, in the
    form the explainers (``tokenizer``) and
    :func:`~captum_matex.data.geometry.prepare` (``image_processor``) read.

    Attributes:
        tokenizer: open_clip's tokenizer for the model.
        image_processor: the resize, centre crop and normalisation of the
            model's evaluation transform.
    """

    tokenizer: Any
    image_processor: InputSpec


def load_model(name_or_path: str | Path | None, device: str = "cpu") -> tuple[nn.Module, Any]:
    r"""Load a supported image-text model and its processor.

    ``None`` gives the embedded phantom model
    (:func:`~captum_matex.zoo.phantom_clip`, offline); the names in
    :data:`EMBEDDED` (``"phantom-clip"``, ``"phantom-siglip"``) give the
    embedded models by name. open_clip models
    (``hf-hub:`` and ``local-dir:`` names, or a folder with an
    ``open_clip_config.json``) go to :func:`load_open_clip`, everything else
    to :func:`load_transformers`.

    Args:
        name_or_path: a model directory or hub name, e.g.
            ``"openai/clip-vit-base-patch16"`` or
            ``"hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"``.
        device: where to put the model.

    Returns:
        ``(model, processor)``; the model is in eval mode.

    Raises:
        ModelLoadError: nothing loadable was found; the message says why.
    """
    source = EMBEDDED_DEFAULT if name_or_path is None else str(name_or_path)
    if source in EMBEDDED:
        from captum_matex import zoo

        model, processor = getattr(zoo, EMBEDDED[source])()
        return model.to(device), processor
    if source.startswith(OPEN_CLIP_SCHEMAS) or (
        Path(source).expanduser() / "open_clip_config.json"
    ).is_file():
        return load_open_clip(source, device)
    return load_transformers(source, device)


def load_open_clip(name: str, device: str = "cpu") -> tuple[nn.Module, OpenCLIPProcessor]:
    r"""Load an open_clip model (BiomedCLIP, open_clip ViTs) with its tokenizer
    and preprocessing; needs the ``openclip`` extra.

    Pickled checkpoints (BiomedCLIP ships ``open_clip_pytorch_model.bin``)
    are read by open_clip with ``torch.load(weights_only=True)``, which
    refuses anything but tensors and plain containers.

    Args:
        name: ``"hf-hub:org/name"`` (needs internet), ``"local-dir:PATH"`` or
            a folder holding ``open_clip_config.json`` and the weights (the
            hub layout, e.g. a downloaded snapshot).
        device: where to put the model.

    Returns:
        ``(model, processor)``: the model in eval mode and an
        :class:`OpenCLIPProcessor`.

    Raises:
        ModelLoadError: open_clip is not installed, the folder or its config
            or weights are missing, or the preprocessing cannot be reproduced.
    """
    try:
        import open_clip
    except ImportError as exc:
        raise ModelLoadError(
            f"{name}: open_clip models need the openclip extra "
            "(pip install 'captum_matex[openclip]')"
        ) from exc
    source = name if name.startswith(OPEN_CLIP_SCHEMAS) else f"local-dir:{name}"
    if source.startswith("local-dir:"):
        folder = Path(source[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"{folder}: no open_clip_config.json; pass the folder of an open_clip model "
                "in the hub layout (open_clip_config.json and its weights)"
            )
        source = f"local-dir:{folder}"
    try:
        model = open_clip.create_model(
            source, device=device, require_pretrained=True, weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(source)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load an open_clip model from {name!r}: {exc}") from exc
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    # open_clip's own defaults fill what the model's config leaves out
    cfg = PreprocessCfg(
        **merge_preprocess_dict(PreprocessCfg(), open_clip.get_model_preprocess_cfg(model))
    )
    return model.eval(), OpenCLIPProcessor(tokenizer, _open_clip_spec(cfg, name))


def _open_clip_spec(cfg: Any, name: str) -> InputSpec:
    r"""The :class:`InputSpec` of open_clip's evaluation transform (``cfg``, an
    ``open_clip.transform.PreprocessCfg``): resize (shortest edge, then square
    centre crop; or ``"squash"`` to the size), ``ToTensor`` and normalisation.
    torchvision rounds odd crop margins where transformers floors them, so
    ``mode="processor"`` may sit one pixel off; the default letterbox mode
    does not crop."""
    height, width = (cfg.size, cfg.size) if isinstance(cfg.size, int) else map(int, cfg.size)
    if cfg.resize_mode == "squash":
        resize: dict[str, int] = {"height": height, "width": width}
        crop = None
    elif cfg.resize_mode == "shortest" and height == width:
        resize, crop = {"shortest_edge": height}, (height, width)
    else:
        raise ModelLoadError(
            f"{name}: open_clip's resize_mode {cfg.resize_mode!r} to {(height, width)} is not "
            "reproduced (square 'shortest' and 'squash' are)"
        )
    return InputSpec(
        size=resize,
        crop_size=crop,
        input_size=(height, width),
        resample=cfg.interpolation,
        pad_rounding="floor",
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
    )
