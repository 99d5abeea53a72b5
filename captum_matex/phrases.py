r"""The phrase language of chest-radiograph findings, in one module.

Data (phantom templates, MS-CXR labels), the anatomical prior, the metrics and
the evaluation all read phrases such as "small left pleural effusion" with the
same words and rules, kept here:

- the vocabulary: sides, regions (lung zones and structures), lung words,
  finding words with their synonyms, negation cues;
- :func:`tokenize`: the normalisation every reading starts from;
- :func:`parse_phrase`: laterality, regions and finding of a phrase
  (:class:`PhraseAnatomy`);
- :func:`laterality`: the side a phrase names;
- :func:`swap_laterality`: the contralateral phrase;
- :func:`is_negated`: whether the phrase denies its finding.

Sides are the patient's. Radiology convention: on a PA/AP film the patient's
left is on the image's right; the mapping to image coordinates belongs to the
code that draws or renders images (the phantom and
:class:`~captum_matex.stages.anatomy.ChestAtlas`), not to this module.

This module imports nothing from ``captum_matex`` (it is a leaf), so every
subpackage can use it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "BILATERAL",
    "CENTRAL_REGIONS",
    "FINDINGS",
    "FINDING_REGIONS",
    "FINDING_WORDS",
    "LATERALITY_WORDS",
    "LOBE_REGIONS",
    "LUNG_WORDS",
    "NEGATION_CUES",
    "REGIONS",
    "REGION_WORDS",
    "SIDED_REGIONS",
    "SIDES",
    "ZONES",
    "PhraseAnatomy",
    "is_negated",
    "laterality",
    "parse_phrase",
    "swap_laterality",
    "tokenize",
]

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

SIDES: tuple[str, ...] = ("right", "left")
r"""The patient's sides, right first (the image's left on a PA/AP film)."""

BILATERAL = "bilateral"
r"""The laterality of a phrase naming both sides."""

ZONES: tuple[str, ...] = ("upper zone", "mid zone", "lower zone")
r"""Lung zones, top to bottom (regions of :data:`SIDED_REGIONS`)."""

SIDED_REGIONS: tuple[str, ...] = (
    ("lung",)
    + ZONES
    + ("apex", "base", "costophrenic angle", "hilum", "perihilar", "lateral periphery")
)
r"""Regions that exist on each side, in canonical order."""

CENTRAL_REGIONS: tuple[str, ...] = ("retrocardiac", "heart", "mediastinum")
r"""Regions that ignore laterality, in canonical order."""

REGIONS: tuple[str, ...] = SIDED_REGIONS + CENTRAL_REGIONS
r"""Every region a phrase can name, in the canonical order of
:attr:`PhraseAnatomy.regions`."""

LATERALITY_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "left": "left",
        "lt": "left",
        "sinistra": "left",
        "right": "right",
        "rt": "right",
        "bilateral": BILATERAL,
        "bilaterally": BILATERAL,
        "both": BILATERAL,
        "bibasilar": BILATERAL,
        "bibasal": BILATERAL,
        "bibasally": BILATERAL,
        "biapical": BILATERAL,
        "lingula": "left",
        "lingular": "left",
        "rul": "right",
        "rml": "right",
        "rll": "right",
        "lul": "left",
        "lll": "left",
    }
)
r"""Token -> laterality it states or implies (bibasilar, lingula, RUL, ...)."""

_SINGLE_LETTER_SIDES = {"l": "left", "r": "right"}

LOBE_REGIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "upper": ("upper zone",),
        "middle": ("mid zone",),
        "lower": ("mid zone", "lower zone"),
    }
)
r"""Zone word before "lobe" -> the zones that lobe covers on a frontal film.
A lower lobe reaches up to the hilum behind the upper lobe, so on a PA/AP
film it projects over the mid as well as the lower zone ("left lower lobe
opacity" may sit in the mid zone); "lower zone" names the lower band only."""

_LOBE_TOKENS = frozenset({"lobe", "lobes", "lobar"})

REGION_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "upper": ("upper zone",),
        "mid": ("mid zone",),
        "middle": ("mid zone",),
        "midlung": ("mid zone",),
        "midzone": ("mid zone",),
        "lower": ("lower zone",),
        "apex": ("apex",),
        "apices": ("apex",),
        "apical": ("apex",),
        "apically": ("apex",),
        "biapical": ("apex",),
        "base": ("base",),
        "bases": ("base",),
        "basal": ("base",),
        "basally": ("base",),
        "basilar": ("base",),
        "bibasilar": ("base",),
        "bibasal": ("base",),
        "bibasally": ("base",),
        "costophrenic": ("costophrenic angle",),
        "hilum": ("hilum",),
        "hila": ("hilum",),
        "hilar": ("hilum",),
        "perihilar": ("perihilar",),
        "parahilar": ("perihilar",),
        "retrocardiac": ("retrocardiac",),
        "heart": ("heart",),
        "cardiac": ("heart",),
        "cardiomegaly": ("heart",),
        "cardiomediastinal": ("heart", "mediastinum"),
        "mediastinum": ("mediastinum",),
        "mediastinal": ("mediastinum",),
        "lateral": ("lateral periphery",),
        "periphery": ("lateral periphery",),
        "peripheral": ("lateral periphery",),
        "peripherally": ("lateral periphery",),
        "lingula": ("mid zone", "lower zone"),
        "lingular": ("mid zone", "lower zone"),
        "rul": LOBE_REGIONS["upper"],
        "rml": LOBE_REGIONS["middle"],
        "rll": LOBE_REGIONS["lower"],
        "lul": LOBE_REGIONS["upper"],
        "lll": LOBE_REGIONS["lower"],
    }
)
r"""Token -> regions of :data:`REGIONS` it names (zones and structures)."""

LUNG_WORDS: frozenset[str] = frozenset(
    {"lung", "lungs", "pulmonary", "hemithorax", "hemithoraces", "lobe", "lobes", "lobar"}
)
r"""Tokens that say "somewhere in the lungs" without naming a part of them."""

FINDING_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "cardiomegaly": "cardiomegaly",
        "effusion": "effusion",
        "effusions": "effusion",
        "pneumothorax": "pneumothorax",
        "pneumothoraces": "pneumothorax",
        "ptx": "pneumothorax",
        "edema": "edema",
        "oedema": "edema",
        "consolidation": "consolidation",
        "consolidations": "consolidation",
        "consolidative": "consolidation",
        "opacity": "opacity",
        "opacities": "opacity",
        "opacification": "opacity",
        "opacified": "opacity",
        "infiltrate": "opacity",
        "infiltrates": "opacity",
        "pneumonia": "pneumonia",
        "atelectasis": "atelectasis",
        "atelectatic": "atelectasis",
        "nodule": "nodule",
        "nodules": "nodule",
        "nodular": "nodule",
    }
)
r"""Token -> canonical finding name (synonyms and plural forms included)."""

FINDING_REGIONS: Mapping[str, tuple[str | None, tuple[str, ...]]] = MappingProxyType(
    {
        "cardiomegaly": (None, ("heart",)),
        "effusion": (None, ("base", "costophrenic angle")),
        "pneumothorax": (None, ("apex", "lateral periphery")),
        "edema": (BILATERAL, ("perihilar",)),
        "consolidation": (None, ("lung",)),
        "opacity": (None, ("lung",)),
        "pneumonia": (None, ("lung",)),
        "atelectasis": (None, ("lung",)),
        "nodule": (None, ("lung",)),
    }
)
r"""Canonical finding -> (laterality used when a phrase names none, typical
regions used when it names none)."""

FINDINGS: tuple[str, ...] = tuple(FINDING_REGIONS)
r"""Canonical finding names, the values of :data:`FINDING_WORDS`."""

NEGATION_CUES: tuple[tuple[str, ...], ...] = (
    ("no",),
    ("not",),
    ("without",),
    ("negative", "for"),
    ("free", "of"),
    ("absence", "of"),
)
r"""Token sequences that deny what follows them ("no pneumothorax")."""

_PSEUDO_NEGATIONS = (("no", "change"), ("no", "interval"), ("not", "only"))
_SCOPE_ENDS = frozenset({"but", "however", "although", "though", "except", "yet"})
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss"})

# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def tokenize(phrase: str) -> list[str]:
    r"""Lower-case ASCII word tokens of a phrase, the input of every reading here.

    Accents and ligatures are folded ("œdème" -> "oedeme"), punctuation and
    hyphens separate words, prefixes split off by a hyphen or a space are
    rejoined ("peri-hilar" -> "perihilar", "bi basilar" -> "bibasilar") and
    "CP angle" becomes "costophrenic".

    Args:
        phrase (str): free-text phrase.

    Returns:
        list of str: the tokens, in order.

    Examples::

        >>> tokenize("Left-sided peri-hilar opacity, CP angle!")
        ['left', 'sided', 'perihilar', 'opacity', 'costophrenic']
    """
    text = unicodedata.normalize("NFKD", phrase.translate(_LIGATURES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^a-z0-9]+", " ", text)
    text = re.sub(r"\b(peri|para|retro|costo|bi)\s+(?=[a-z])", r"\1", text)
    text = re.sub(r"\bcp angles?\b", "costophrenic", text)
    return text.split()


def _is_place_word(token: str) -> bool:
    r"""Whether ``token`` can follow a one-letter side abbreviation ("L base")."""
    return token in REGION_WORDS or token in LUNG_WORDS or token in ("sided", "side")


def _side_votes(tokens: list[str]) -> set[str]:
    r"""The lateralities the tokens state or imply."""
    votes: set[str] = set()
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token in _SINGLE_LETTER_SIDES and _is_place_word(following):
            votes.add(_SINGLE_LETTER_SIDES[token])
        if token in LATERALITY_WORDS:
            votes.add(LATERALITY_WORDS[token])
    return votes


def _combine(votes: set[str]) -> str | None:
    r"""One laterality from the sides found; both sides mean bilateral."""
    if BILATERAL in votes or set(SIDES) <= votes:
        return BILATERAL
    return next(iter(votes), None)


def _literal_words(phrase: str) -> set[str]:
    r"""The words left, right and bilateral as written between spaces and commas."""
    return set(phrase.lower().replace(",", " ").split()) & {*SIDES, BILATERAL}


def laterality(phrase: str, literal: bool = False) -> str | None:
    r"""The side a phrase names: ``"left"``, ``"right"``, ``"bilateral"`` or ``None``.

    A phrase naming both sides is bilateral. Unlike
    :attr:`PhraseAnatomy.laterality`, a finding's usual side is not filled
    in ("pulmonary edema" names no side).

    Args:
        phrase (str): free-text phrase.
        literal (bool, optional): ``False`` reads every side word of
            :data:`LATERALITY_WORDS` after :func:`tokenize` ("left-sided",
            "Rt.", "bibasilar", "RLL") and a one-letter "L"/"R" before a
            place word ("R apex"). ``True`` reads only the words "left",
            "right" and "bilateral" written between spaces or commas (the
            reading of the MS-CXR samples of
            :func:`~captum_matex.evaluation.samples.mscxr_samples`).
            Default: ``False``

    Returns:
        str or None: the laterality, ``None`` when no side is named.

    Examples::

        >>> laterality("Left-sided effusion"), laterality("Left-sided effusion", literal=True)
        ('left', None)
        >>> laterality("bibasilar atelectasis")
        'bilateral'
    """
    votes = _literal_words(phrase) if literal else _side_votes(tokenize(phrase))
    return _combine(votes)


def _cue_at(tokens: list[str], index: int) -> bool:
    r"""Whether a negation cue (and no pseudo-negation) starts at ``index``."""

    def starts(sequence: tuple[str, ...]) -> bool:
        return tuple(tokens[index : index + len(sequence)]) == sequence

    return any(map(starts, NEGATION_CUES)) and not any(map(starts, _PSEUDO_NEGATIONS))


def _negated(tokens: list[str]) -> bool:
    r"""Whether a negation cue is in scope at the first finding word (or at the end)."""
    target = next((i for i, token in enumerate(tokens) if token in FINDING_WORDS), len(tokens))
    negated = False
    for index in range(target):
        if tokens[index] in _SCOPE_ENDS:
            negated = False
        negated = negated or _cue_at(tokens, index)
    return negated


def is_negated(phrase: str) -> bool:
    r"""Whether a phrase denies its finding ("no pneumothorax", "without effusion").

    A cue of :data:`NEGATION_CUES` negates the first finding word after it
    (or, in a phrase without a finding word, the rest of the phrase) unless
    a conjunction such as "but" or "however" comes in between. "no change"
    and "no interval" are not negations. The reading is deliberately small
    (one finding per phrase, like :func:`parse_phrase`): in "no
    consolidation, but a small right effusion" the first finding,
    consolidation, is negated.

    Args:
        phrase (str): free-text phrase.

    Returns:
        bool: ``True`` when the finding (or the phrase) is negated.

    Examples::

        >>> is_negated("No evidence of pneumothorax"), is_negated("small left effusion")
        (True, False)
        >>> is_negated("effusion but no pneumothorax")
        False
    """
    return _negated(tokenize(phrase))


@dataclass(frozen=True)
class PhraseAnatomy:
    r"""What a phrase says about where a finding is.

    Attributes:
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or ``None`` (side
            not stated). Sides are the patient's.
        regions: anatomical regions the prior covers, in the canonical order
            of :data:`REGIONS`: the explicit region words of the phrase, else
            the typical regions of its finding, else ``("lung",)`` when the
            phrase only names a side or the lungs; empty when the phrase has
            no anatomical word (uniform prior).
        finding: canonical name of the first finding word (for example
            ``"effusion"``), or ``None``.

    Examples::

        >>> parse_phrase("left pleural effusion")
        PhraseAnatomy(laterality='left', regions=('base', 'costophrenic angle'), finding='effusion')
    """

    laterality: str | None
    regions: tuple[str, ...]
    finding: str | None

    @property
    def zones(self) -> tuple[str, ...]:
        r"""The lung zones among :attr:`regions` (see :data:`ZONES`).

        Examples::

            >>> parse_phrase("lingular opacity").zones
            ('mid zone', 'lower zone')
        """
        return tuple(region for region in self.regions if region in ZONES)

    @property
    def structures(self) -> tuple[str, ...]:
        r"""The regions other than lung zones (apex, base, heart, ...).

        Examples::

            >>> parse_phrase("right upper lobe apical nodule").structures
            ('apex',)
        """
        return tuple(region for region in self.regions if region not in ZONES)

    def atlas_keys(self) -> tuple[str, ...]:
        r"""Names of the :class:`~captum_matex.stages.anatomy.ChestAtlas`
        regions whose union is the prior.

        Sided regions get the stated side, or both sides when the laterality
        is ``"bilateral"`` or ``None``; central regions (heart, mediastinum,
        retrocardiac) ignore laterality.

        Returns:
            tuple of str: keys from
            :data:`~captum_matex.stages.anatomy.ATLAS_REGIONS`; empty for a
            phrase without anatomical words.

        Examples::

            >>> parse_phrase("right apical pneumothorax").atlas_keys()
            ('right apex',)
        """
        sides = SIDES if self.laterality in (None, BILATERAL) else (self.laterality,)
        keys: list[str] = []
        for region in self.regions:
            if region in SIDED_REGIONS:
                keys.extend(f"{side} {region}" for side in sides)
            else:
                keys.append(region)
        return tuple(keys)


@lru_cache(maxsize=4096)
def parse_phrase(phrase: str) -> PhraseAnatomy:
    r"""Read laterality, anatomical regions and finding from a phrase.

    Matching is case-insensitive and tolerant of punctuation, hyphens and
    accents (:func:`tokenize`). Recognised words:

    - laterality: left/right/lt/rt, one-letter "L"/"R" directly before a
      region word ("R apex"), bilateral/both, and words that imply a side or
      both (bibasilar, biapical, lingula, RUL/RML/RLL/LUL/LLL);
    - zones: upper, mid/middle, lower (with or without "zone"); a lobe names
      the zones it projects over on a frontal film (:data:`LOBE_REGIONS`: a
      lower lobe, also RLL/LLL, covers the mid and lower zones); the lingula
      is the left mid and lower zone;
    - structures: apex/apical, base/basal/basilar, costophrenic (or CP)
      angle, hilum/hilar, perihilar/parahilar, retrocardiac, heart/cardiac
      silhouette/cardiomegaly, mediastinum/mediastinal, lateral/peripheral;
    - findings with a typical region, used only when the phrase names no
      region: cardiomegaly (heart), effusion (bases and costophrenic angles),
      pneumothorax (apex and lateral periphery), edema (bilateral
      perihilar), consolidation/opacity/pneumonia/atelectasis/nodule (the
      lung fields).

    Negation does not change the parse: "no pneumothorax" parses like
    "pneumothorax"; ask :func:`is_negated` separately.

    Args:
        phrase (str): free-text phrase, for example an MS-CXR ``label_text``.

    Returns:
        PhraseAnatomy: the parse; ``regions`` is empty when the phrase has no
        anatomical word.

    Examples::

        >>> parse_phrase("Left-sided basilar atelectasis")
        PhraseAnatomy(laterality='left', regions=('base',), finding='atelectasis')
        >>> parse_phrase("small right apical pneumothorax").regions
        ('apex',)
        >>> parse_phrase("pulmonary edema")
        PhraseAnatomy(laterality='bilateral', regions=('perihilar',), finding='edema')
    """
    tokens = tokenize(phrase)
    side = _combine(_side_votes(tokens))
    regions = {region for token in tokens for region in REGION_WORDS.get(token, ())}
    for token, after in zip(tokens, tokens[1:]):
        if after in _LOBE_TOKENS:
            regions.update(LOBE_REGIONS.get(token, ()))
    finding = next((FINDING_WORDS[token] for token in tokens if token in FINDING_WORDS), None)
    if not regions and finding is not None:
        default_side, default_regions = FINDING_REGIONS[finding]
        side = side or default_side
        regions.update(default_regions)
    elif not regions and (side is not None or any(token in LUNG_WORDS for token in tokens)):
        regions.add("lung")
    ordered = tuple(region for region in REGIONS if region in regions)
    return PhraseAnatomy(laterality=side, regions=ordered, finding=finding)


_SWAPS = {"left": "right", "right": "left"}
_SIDE_RE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_word(match: re.Match) -> str:
    r"""The other side for a matched side word, in the same case."""
    word = match.group(0)
    other = _SWAPS[word.lower()]
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_laterality(phrase: str) -> str:
    r"""The contralateral phrase: every whole word "left" and "right" swapped,
    case kept ("Left lower lobe opacity" -> "Right lower lobe opacity").

    Only the two words are swapped (a hyphen ends a word, so "left-sided"
    becomes "right-sided"); abbreviations (Lt, RLL, "R apex") and implied
    sides (lingula) are left as they are. A phrase without a side is
    returned unchanged; compare with the input to skip such phrases (use an
    unrelated finding for them instead).

    Args:
        phrase (str): the original phrase.

    Returns:
        str: the swapped phrase.

    Examples::

        >>> swap_laterality("Left lower lobe opacity, RIGHT effusion")
        'Right lower lobe opacity, LEFT effusion'
        >>> swap_laterality("leftover upright film")
        'leftover upright film'
    """
    return _SIDE_RE.sub(_swap_word, phrase)


_SENTENCE_END = re.compile(r"[.;\n]+")


def report_phrases(report: str) -> list[str]:
    r"""The phrases of a generated report: its sentences (split at ``.``,
    ``;`` and line breaks), stripped, empty ones dropped.

    Args:
        report (str): free-text report, e.g. a model's generation.

    Returns:
        list of str: the phrases in report order.

    Examples::

        >>> report_phrases("Small left pleural effusion. Cardiomegaly; no pneumothorax.")
        ['Small left pleural effusion', 'Cardiomegaly', 'no pneumothorax']
    """
    return [part.strip() for part in _SENTENCE_END.split(report) if part.strip()]
