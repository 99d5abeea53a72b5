r"""
What a model's preprocessing does: :class:`InputSpec`, read from a transformers
image processor by :func:`input_spec` or given as a plain size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

SizeLike = Union[int, Sequence[int]]

_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}  # PIL ids; others -> bicubic


@dataclass(frozen=True)
class InputSpec:
    r"""
    What a model's preprocessing does, read from a processor or given by hand.

    Attributes:

        size (dict): ``{"shortest_edge": S}`` or ``{"height": h, "width": w}``
            (resize target), or ``None`` for no resize.
        crop_size (tuple): ``(h, w)`` of the centre crop, or ``None``.
        input_size (tuple): ``(h, w)`` of the model input (letterbox target).
        resample (str): ``torch.nn.functional.interpolate`` mode.
        pad_rounding (str): ``"ceil"`` (PIL / numpy backend) or ``"floor"``
            (torchvision backend): where the odd pixel goes when the crop
            is larger than the image.
        rescale (float): Factor from [0, 1] pixels to the processor's
            rescaled values (``255 * rescale_factor``, 1.0 for the usual
            ``1/255``).
        mean (tuple): Per-channel mean, or ``None`` for no normalisation.
        std (tuple): Per-channel standard deviation, or ``None``.
        channels (int): Output channels (grey replicated).
    """

    size: dict[str, int] | None
    crop_size: tuple[int, int] | None
    input_size: tuple[int, int]
    resample: str = "bicubic"
    pad_rounding: str = "ceil"
    rescale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(key)
    return getattr(config, key, None)


def _pair(size: SizeLike) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(v) for v in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width); got {size}")
    return size  # type: ignore[return-value]


def input_spec(processor_or_size: Any, channels: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> InputSpec:
    r"""
    Read the preprocessing of a transformers CLIP processor, or describe a plain size.

    Args:

        processor_or_size: A transformers processor (its
            ``image_processor`` is used), an image processor, an
            :class:`InputSpec` (returned as is), an object whose
            ``image_processor`` is one (such as
            :class:`~captum_matex.loading.OpenCLIPProcessor`), an ``int``
            (square input) or ``(height, width)``.
        channels (int, optional): Output channels. Default: 3
        mean (sequence of float, optional): Normalisation mean (overrides
            the processor's). Default: the processor's, or none for a size.
        std (sequence of float, optional): Normalisation std. Default: as ``mean``.

    Returns:
        InputSpec: The preprocessing.

    Raises:
        ValueError: the processor's ``size`` has keys this module cannot
            reproduce, or it pads (``do_pad``).

    Examples::

        >>> spec = input_spec(processor)
        >>> spec.size, spec.crop_size
        ({'shortest_edge': 112}, (112, 112))
    """
    if isinstance(processor_or_size, InputSpec):
        return processor_or_size
    if isinstance(processor_or_size, (int, tuple, list)):
        size = _pair(processor_or_size)
        return InputSpec(
            size={"height": size[0], "width": size[1]}, crop_size=None, input_size=size,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None, channels=channels or 3,
        )
    ip = getattr(processor_or_size, "image_processor", processor_or_size)
    if isinstance(ip, InputSpec):  # e.g. an OpenCLIPProcessor's
        return ip
    if _get(ip, "do_pad"):
        raise ValueError(
            f"{type(ip).__name__} pads (do_pad=True); only resize and centre crop are reproduced"
        )
    size_cfg = _get(ip, "size")
    do_resize = _get(ip, "do_resize")
    size: dict[str, int] | None = None
    if do_resize is None or do_resize:
        shortest, longest = _get(size_cfg, "shortest_edge"), _get(size_cfg, "longest_edge")
        height, width = _get(size_cfg, "height"), _get(size_cfg, "width")
        if shortest and not longest:
            size = {"shortest_edge": int(shortest)}
        elif height and width:
            size = {"height": int(height), "width": int(width)}
        else:
            raise ValueError(
                f"cannot reproduce image processor size {size_cfg!r}: expected "
                "{'shortest_edge': S} or {'height': h, 'width': w}"
            )
    crop_cfg = _get(ip, "crop_size")
    do_crop = _get(ip, "do_center_crop")
    crop = None
    if do_crop:
        crop = (int(_get(crop_cfg, "height")), int(_get(crop_cfg, "width")))
    if crop is not None:
        target = crop
    elif size is not None and "height" in size:
        target = (size["height"], size["width"])
    elif size is not None:
        target = (size["shortest_edge"], size["shortest_edge"])
    else:
        raise ValueError(f"{type(ip).__name__} neither resizes nor crops; the input size is undefined")
    backend = str(_get(ip, "backend") or "")
    fast = backend == "torchvision" or type(ip).__name__.endswith("Fast")
    resample = _get(ip, "resample")
    resample_id = int(getattr(resample, "value", resample)) if resample is not None else 3
    rescale = 1.0
    if _get(ip, "do_rescale") is not False:
        rescale = 255.0 * float(_get(ip, "rescale_factor") or 1 / 255)
    else:
        rescale = 255.0
    do_norm = _get(ip, "do_normalize") is not False
    proc_mean = _get(ip, "image_mean") if do_norm else None
    proc_std = _get(ip, "image_std") if do_norm else None
    mean = mean if mean is not None else proc_mean
    std = std if std is not None else proc_std
    n = channels or 3
    if isinstance(mean, (int, float)):
        mean = [float(mean)] * n
    if isinstance(std, (int, float)):
        std = [float(std)] * n
    return InputSpec(
        size=size, crop_size=crop, input_size=target,
        resample=_RESAMPLE.get(resample_id, "bicubic"),
        pad_rounding="floor" if fast else "ceil", rescale=rescale,
        mean=tuple(float(v) for v in mean) if mean is not None else None,
        std=tuple(float(v) for v in std) if std is not None else None,
        channels=n,
    )
