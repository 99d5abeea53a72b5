r"""
Finding names and radiology phrase templates of the chest phantom.

:data:`FINDINGS` names what the phantom can draw; every finding has phrase
templates (with the patient side, lung zone, lobe and size as placeholders),
a canonical phrase for zero-shot finding selection, and bilateral variants
where they exist.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from captum_matex.phrases import SIDES

FINDINGS: Tuple[str, ...] = (
    "normal",
    "consolidation",
    "nodule",
    "effusion",
    "pneumothorax",
    "cardiomegaly",
    "atelectasis",
    "edema",
)
LATERALISED: Tuple[str, ...] = (
    "consolidation",
    "nodule",
    "effusion",
    "pneumothorax",
    "atelectasis",
)
# Phrase templates. {side}: patient side word, {zone}: upper/mid/lower,
# {lobe}: upper/lower, {size}: small/moderate/large. Every lateralised
# template names the side, so the side can only be answered by looking at
# the finding itself.
TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "normal": (
        "no acute cardiopulmonary process",
        "no acute cardiopulmonary abnormality",
        "the lungs are clear",
        "clear lungs without focal consolidation",
        "normal chest radiograph",
    ),
    "consolidation": (
        "{side} lung opacity",
        "{side} {lobe} lobe opacity",
        "opacity in the {side} {zone} lung",
        "airspace opacity in the {side} {zone} zone",
        "{side} {zone} lung consolidation",
        "focal consolidation in the {side} lung",
    ),
    "nodule": (
        "{side} lung nodule",
        "{side} lung mass",
        "nodule in the {side} {zone} lung",
        "rounded mass in the {side} {zone} zone",
        "{side} {lobe} lobe nodule",
        "{size} nodular opacity in the {side} lung",
    ),
    "effusion": (
        "{side} pleural effusion",
        "{size} {side} pleural effusion",
        "blunting of the {side} costophrenic angle",
        "{side} effusion with meniscus",
        "fluid at the {side} base",
    ),
    "pneumothorax": (
        "{side} pneumothorax",
        "{size} {side} pneumothorax",
        "{side} apical pneumothorax",
        "visible {side} pleural line with pneumothorax",
    ),
    "cardiomegaly": (
        "enlarged cardiac silhouette",
        "cardiomegaly",
        "the heart is enlarged",
        "{size} cardiomegaly",
        "enlarged heart size",
    ),
    "atelectasis": (
        "{side} basilar atelectasis",
        "plate-like atelectasis at the {side} base",
        "{side} lower lobe atelectasis",
        "band-like opacity at the {side} base",
        "linear atelectasis in the {side} lower zone",
    ),
    "edema": (
        "pulmonary edema",
        "bilateral perihilar haze",
        "interstitial pulmonary edema",
        "mild pulmonary edema",
        "bilateral perihilar opacities",
    ),
}
BILATERAL_TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "effusion": (
        "bilateral pleural effusions",
        "{size} bilateral pleural effusions",
        "blunting of both costophrenic angles",
    ),
}
CANONICAL: Dict[str, str] = {
    "normal": "no acute cardiopulmonary process",
    "consolidation": "{side} lung opacity",
    "nodule": "{side} lung nodule",
    "effusion": "{side} pleural effusion",
    "pneumothorax": "{side} pneumothorax",
    "cardiomegaly": "enlarged cardiac silhouette",
    "atelectasis": "{side} basilar atelectasis",
    "edema": "pulmonary edema",
}
CANONICAL_BILATERAL: Dict[str, str] = {"effusion": "bilateral pleural effusions"}


def _fill(template: str, side: Optional[str], zone: str, size: str) -> str:
    r"""Fill the placeholders of a phrase template."""
    lobe = "upper" if zone == "upper" else "lower"
    return template.format(side=side or "", zone=zone, lobe=lobe, size=size)


def candidate_phrases(laterality: Optional[str] = "right") -> Dict[str, str]:
    r"""
    One canonical phrase per finding, used for zero-shot finding selection.

    Args:

        laterality (str or None, optional): Side word (``"left"``,
            ``"right"`` or ``"bilateral"``) put into the phrases of
            lateralised findings. ``None`` uses ``"right"``.
            Default: ``"right"``

    Returns:
        dict: Maps each entry of :attr:`PhantomCXR.FINDINGS` to a phrase.
    """
    out = {}
    for name in FINDINGS:
        if laterality == "bilateral" and name in CANONICAL_BILATERAL:
            out[name] = CANONICAL_BILATERAL[name]
        else:
            side = laterality if laterality in SIDES else "right"
            out[name] = CANONICAL[name].format(side=side)
    return out


def all_phrases() -> List[str]:
    r"""
    Every phrase the phantom can produce (all templates, sides, zones, sizes).

    Returns:
        list of str: Sorted, unique phrases. Useful to build a vocabulary or a
        bank of candidate texts.
    """
    out = set()
    tables = list(TEMPLATES.items()) + list(BILATERAL_TEMPLATES.items())
    for _, templates in tables:
        for t in templates:
            for side in SIDES:
                for zone in ("upper", "mid", "lower"):
                    for size in ("small", "moderate", "large", "mild"):
                        out.add(_fill(t, side, zone, size))
    return sorted(out)


def _pick_phrase(
    rng: np.random.Generator, name: str, lat: Optional[str], zone: str, size: str
) -> str:
    r"""Pick and fill a phrase template."""
    if lat == "bilateral" and name in BILATERAL_TEMPLATES:
        table = BILATERAL_TEMPLATES[name]
    else:
        table = TEMPLATES[name]
    t = table[int(rng.integers(0, len(table)))]
    return _fill(t, lat, zone, size or "small")
