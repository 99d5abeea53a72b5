"""Deprecated: the baselines' machinery is :mod:`captum_matex.explainer` now."""

from __future__ import annotations

import warnings
from typing import Any

from captum_matex import explainer

#: old name -> its home in :mod:`captum_matex.explainer`
_MOVED = {
    "BaselineAttribution": "Explainer",
    "_DEFAULT": "DEFAULT",
    "apply_sign": "apply_sign",
    "format_pixel_maps": "format_pixel_maps",
    "resolve_block": "resolve_block",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"captum_matex.baselines._base.{name} moved to captum_matex.explainer.{_MOVED[name]}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(explainer, _MOVED[name])
