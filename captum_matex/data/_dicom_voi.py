r"""
The VOI window of the DICOM display pipeline (DICOM PS3.3 C.11.2): checking a
window (the file's or the caller's ``voi``) and applying it in place in
float32 with the ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID`` function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from captum_matex.data._radiograph import ImageReadError


def _first(value: Any) -> float:
    r"""First entry of a possibly multi-valued DICOM number."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        value = value[0]
    return float(value)


def _usable_window(center: float, width: float, function: str = "LINEAR") -> bool:
    r"""Whether a VOI window can be applied in float32: finite, representable and
    wide enough for ``function`` (width >= 1 for ``LINEAR``, > 0 otherwise)."""
    limit = float(np.finfo(np.float32).max)
    if not (math.isfinite(center) and math.isfinite(width) and abs(center) < limit and width < limit):
        return False
    if function.strip().upper() in ("LINEAR_EXACT", "SIGMOID"):
        return width > 0
    return width >= 1


def _check_voi(voi: Any) -> str | tuple[float, float]:
    r"""``voi`` as ``"auto"``, ``"minmax"`` or a float ``(center, width)`` window.

    Raises:
        ImageReadError: anything else, or a window that is not finite or has
            a width below 1 (the ``LINEAR`` function's minimum).
    """
    if isinstance(voi, str) and voi in ("auto", "minmax"):
        return voi
    if isinstance(voi, (tuple, list)) and len(voi) == 2:
        try:
            center, width = float(voi[0]), float(voi[1])
        except (TypeError, ValueError):
            center, width = math.nan, math.nan
        if _usable_window(center, width):
            return center, width
    raise ImageReadError(
        f"voi must be 'auto', 'minmax' or (center, width) with finite numbers and "
        f"width >= 1; got {voi!r}"
    )


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    r"""
    Apply a VOI window in place (float32), mapping it to [0, 1] (DICOM PS3.3 C.11.2.1.2).

    Args:

        values (numpy.ndarray): float32 modality values, overwritten.
        center (float): Window centre.
        width (float): Window width (>= 1 for ``LINEAR``, > 0 otherwise).
        function (str): ``"LINEAR"``, ``"LINEAR_EXACT"`` or ``"SIGMOID"``.

    Returns:
        numpy.ndarray: ``values``, now in [0, 1].
    """
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ImageReadError(f"SIGMOID window width must be > 0, got {width}")
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
        return values
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageReadError(f"LINEAR_EXACT window width must be > 0, got {width}")
        values -= center
        values *= 1.0 / width
    else:
        if width < 1:
            raise ImageReadError(f"LINEAR window width must be >= 1, got {width}")
        if width == 1:  # a threshold at the centre
            np.greater(values, center - 0.5, out=values, casting="unsafe")
            return values
        values -= center - 0.5
        values *= 1.0 / (width - 1)
    values += 0.5
    np.clip(values, 0.0, 1.0, out=values)
    return values
