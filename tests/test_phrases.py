"""Tests for the phrase language (captum_matex.phrases) and its old import paths."""

from __future__ import annotations

import ast
import inspect

import pytest

from captum_matex import phrases
from captum_matex.data import phantom
from captum_matex.data.mscxr import FINDINGS as MSCXR_FINDINGS
from captum_matex.phrases import (
    BILATERAL,
    FINDING_REGIONS,
    FINDING_WORDS,
    FINDINGS,
    LATERALITY_WORDS,
    REGION_WORDS,
    REGIONS,
    SIDES,
    ZONES,
    PhraseAnatomy,
    is_negated,
    laterality,
    parse_phrase,
    swap_laterality,
    tokenize,
)

RADIOLOGY = [
    "small left pleural effusion",
    "right basilar opacity",
    "no pneumothorax",
    "bilateral lower lobe atelectasis",
    "cardiomegaly",
    "left-sided effusion",
    "R upper zone consolidation",
    "retrocardiac opacity",
    "Left lower lobe opacity, RIGHT effusion.",
    "lingular atelectasis",
    "",
]


# --- vocabulary --------------------------------------------------------------


def test_vocabulary_is_consistent() -> None:
    assert SIDES == ("right", "left")
    assert set(FINDING_WORDS.values()) == set(FINDINGS) == set(FINDING_REGIONS)
    assert set(LATERALITY_WORDS.values()) == {*SIDES, BILATERAL}
    assert {region for regions in REGION_WORDS.values() for region in regions} <= set(REGIONS)
    assert all(set(regions) <= set(REGIONS) for _, regions in FINDING_REGIONS.values())
    assert set(ZONES) < set(REGIONS)


def test_vocabulary_is_read_only() -> None:
    with pytest.raises(TypeError):
        FINDING_WORDS["mass"] = "nodule"  # type: ignore[index]


def test_dataset_findings_are_in_the_vocabulary() -> None:
    assert {parse_phrase(name).finding for name in MSCXR_FINDINGS} <= set(FINDINGS)
    assert set(phantom.FINDINGS) - {"normal"} <= set(FINDINGS)


def test_module_is_a_leaf() -> None:
    tree = ast.parse(inspect.getsource(phrases))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("captum_matex")]


# --- parsing -----------------------------------------------------------------


def test_tokenize_normalises_case_accents_and_hyphens() -> None:
    assert tokenize("R\u00e9tro-cardiac  OPACITY!") == ["retrocardiac", "opacity"]
    assert tokenize("Blunted CP angles") == ["blunted", "costophrenic"]
    assert tokenize("pulmonary \u0153dema") == ["pulmonary", "oedema"]


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("small left pleural effusion", PhraseAnatomy("left", ("base", "costophrenic angle"), "effusion")),
        ("right basilar opacity", PhraseAnatomy("right", ("base",), "opacity")),
        ("bilateral lower lobe atelectasis", PhraseAnatomy("bilateral", ("mid zone", "lower zone"), "atelectasis")),
        ("R upper zone consolidation", PhraseAnatomy("right", ("upper zone",), "consolidation")),
        ("left-sided effusion", PhraseAnatomy("left", ("base", "costophrenic angle"), "effusion")),
        ("cardiomegaly", PhraseAnatomy(None, ("heart",), "cardiomegaly")),
        ("no pneumothorax", PhraseAnatomy(None, ("apex", "lateral periphery"), "pneumothorax")),
    ],
)
def test_parse_phrase(phrase: str, expected: PhraseAnatomy) -> None:
    assert parse_phrase(phrase) == expected


def test_zones_and_structures_split_the_regions() -> None:
    anatomy = parse_phrase("left upper lobe apical and basilar opacity")
    assert anatomy.zones == ("upper zone",)
    assert anatomy.structures == ("apex", "base")
    assert parse_phrase("lingular opacity").zones == ("mid zone", "lower zone")


def test_atlas_keys_follow_the_side() -> None:
    assert parse_phrase("left pleural effusion").atlas_keys() == ("left base", "left costophrenic angle")
    assert parse_phrase("retrocardiac opacity").atlas_keys() == ("retrocardiac",)
    assert parse_phrase("bibasilar atelectasis").atlas_keys() == ("right base", "left base")


# --- laterality --------------------------------------------------------------


@pytest.mark.parametrize(
    "phrase, full, literal",
    [
        ("small left pleural effusion", "left", "left"),
        ("Right upper lobe opacity", "right", "right"),
        ("left and right effusions", "bilateral", "bilateral"),
        ("bilateral effusions", "bilateral", "bilateral"),
        ("left-sided effusion", "left", None),
        ("Rt. CP angle blunting", "right", None),
        ("R apex", "right", None),
        ("opacity L", None, None),
        ("bibasilar atelectasis", "bilateral", None),
        ("RLL consolidation", "right", None),
        ("pulmonary edema", None, None),
        ("upright film, leftover", None, None),
    ],
)
def test_laterality(phrase: str, full: str | None, literal: str | None) -> None:
    assert laterality(phrase) == full
    assert laterality(phrase, literal=True) == literal


def test_laterality_agrees_with_the_parse_when_the_phrase_names_a_side() -> None:
    for phrase in RADIOLOGY + phantom.all_phrases():
        if laterality(phrase) is not None:
            assert parse_phrase(phrase).laterality == laterality(phrase), phrase


# --- swapping ----------------------------------------------------------------


def test_swap_laterality_keeps_case_and_whole_words() -> None:
    assert swap_laterality("Left lower lobe opacity, RIGHT effusion.") == "Right lower lobe opacity, LEFT effusion."
    assert swap_laterality("left-sided effusion") == "right-sided effusion"
    assert swap_laterality("leftover upright film") == "leftover upright film"
    assert swap_laterality("cardiomegaly") == "cardiomegaly"


def test_swap_laterality_round_trips_and_mirrors_the_side() -> None:
    mirrored = {"left": "right", "right": "left", "bilateral": "bilateral", None: None}
    for phrase in RADIOLOGY + phantom.all_phrases():
        swapped = swap_laterality(phrase)
        assert swap_laterality(swapped) == phrase
        assert laterality(swapped, literal=True) == mirrored[laterality(phrase, literal=True)], phrase


def test_swapped_phantom_phrases_stay_in_the_phantom_language() -> None:
    bank = set(phantom.all_phrases())
    assert all(swap_laterality(phrase) in bank for phrase in bank)


# --- negation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "phrase, negated",
    [
        ("no pneumothorax", True),
        ("No evidence of pneumothorax.", True),
        ("without focal consolidation", True),
        ("negative for effusion", True),
        ("free of effusion", True),
        ("no acute cardiopulmonary process", True),
        ("small left pleural effusion", False),
        ("noted left effusion", False),
        ("effusion but no pneumothorax", False),
        ("no change in the left pleural effusion", False),
        ("not only consolidation", False),
        ("no left effusion, but right pneumothorax", True),
        ("", False),
    ],
)
def test_is_negated(phrase: str, negated: bool) -> None:
    assert is_negated(phrase) is negated


def test_negation_does_not_change_the_parse() -> None:
    assert parse_phrase("no left pleural effusion") == parse_phrase("left pleural effusion")


# --- old import paths ----------------------------------------------------------


def test_old_import_paths_give_the_same_functions() -> None:
    import captum_matex.metrics as metrics
    import captum_matex.stages as stages
    from captum_matex.metrics import sanity
    from captum_matex.stages import anatomy

    assert metrics.swap_laterality is sanity.swap_laterality is phantom.swap_laterality is swap_laterality
    assert stages.parse_phrase is anatomy.parse_phrase is parse_phrase
    assert stages.PhraseAnatomy is anatomy.PhraseAnatomy is PhraseAnatomy


@pytest.mark.parametrize("phrase", RADIOLOGY)
def test_old_import_paths_give_the_same_results(phrase: str) -> None:
    from captum_matex.evaluation.scoring import UNRELATED_PHRASE, swapped_phrase
    from captum_matex.metrics.sanity import swap_laterality as sanity_swap
    from captum_matex.stages.anatomy import parse_phrase as anatomy_parse

    assert anatomy_parse(phrase) == parse_phrase(phrase)
    assert sanity_swap(phrase) == swap_laterality(phrase)
    expected = swap_laterality(phrase) if swap_laterality(phrase) != phrase else UNRELATED_PHRASE
    assert swapped_phrase(phrase) == expected
