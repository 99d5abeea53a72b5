"""Property-based tests of the public API: every input gives a valid map or a documented error.

Each property draws the parameters of a case, builds the tensors from a drawn
seed, predicts the outcome from the tensors themselves (which check applies
first, which sample is bad) and then checks that the call gives exactly that
outcome: a valid map (shape, dtype, device, finite, in [0, 1]) or a
``ValueError`` / ``TypeError`` whose message names the fix. Anything else (an
internal error, a wrong shape, a NaN) fails.

Run with ``--hypothesis-show-statistics`` to see how many examples each
property ran.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from conftest import WORDS, make_clip, make_tokenizer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex import MATEX, SimilarityForward, baselines

IMAGE = 16  # the tiny model: 16 x 16 pixels, 8 x 8 patches, a 2 x 2 grid
GRID = (2, 2)
WIDTH = 16  # projection_dim of make_clip
VOCAB = len(WORDS) + 4
CONTEXT = 16
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
NOT_FLOATS = [torch.uint8, torch.int64, torch.bool]
CHEAP = {
    "integrated_gradients": dict(n_steps=4, internal_batch_size=16),
    "smoothgrad": dict(nt_samples=2),
    "m2ib": dict(steps=1, num_samples=2),
}
SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


pytestmark = pytest.mark.usefixtures("tiny_threads")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(CONTEXT)


@pytest.fixture(scope="module")
def model():
    return make_clip(layers=2, image_size=IMAGE, patch=8, width=16)


@pytest.fixture(scope="module")
def matex(model, tokenizer):
    return MATEX(model, tokenizer)


@pytest.fixture(scope="module")
def explainers(model, tokenizer):
    return {
        name: baselines.get(name)(model, tokenizer, **CHEAP.get(name, {}))
        for name in runnable_methods(HFCLIPAdapter)
    }


# --------------------------------------------------------------------------
# building and judging cases
# --------------------------------------------------------------------------
def make_images(seed: int, shape: tuple[int, ...], dtype: torch.dtype, content: str,
                scale: float = 1.0, value: float = 0.0, bad: tuple[int, ...] = ()) -> torch.Tensor:
    """Pixel values of one ``content`` kind; ``bad`` samples get a NaN or Inf pixel."""
    g = torch.Generator().manual_seed(seed)
    if content == "constant":
        x = torch.full(shape, value, dtype=torch.float64)
    elif content == "zeros":
        x = torch.zeros(shape, dtype=torch.float64)
    else:  # "noise"
        x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    for i, b in enumerate(bad):
        if b < shape[0]:
            x[(b,) + (0,) * (len(shape) - 1)] = [float("nan"), float("inf"), -float("inf")][i % 3]
    if dtype.is_floating_point:
        return x.to(dtype)
    return x.abs().clamp(0, 255).to(dtype)  # raw integer pixels


def image_error(images: torch.Tensor) -> tuple[type[Exception], str] | None:
    """The documented error ``images`` must raise (first check that applies), or None."""
    if images.ndim != 4:
        return ValueError, r"shape \(B, C, H, W\).*unsqueeze\(0\)"
    if not images.is_floating_point():
        return TypeError, "pass normalised float pixel values"
    if images.shape[0] == 0:
        return ValueError, r"empty batch"
    if images.shape[1] != 3:
        return ValueError, rf"{images.shape[1]} channel\(s\) but the model expects 3.*expand"
    if tuple(images.shape[-2:]) != (IMAGE, IMAGE):
        return ValueError, rf"expects \({IMAGE}, {IMAGE}\); resize"
    finite = torch.isfinite(images).flatten(1).all(1)
    if not finite.all():
        bad = (~finite).nonzero().flatten().tolist()
        return ValueError, re.escape(f"NaN or Inf pixels in sample(s) {bad}; clean or drop")
    return None


OVERFLOW = "score is NaN or Inf .* pass the processor's normalised pixel values"


def expected_shape(images: torch.Tensor, output: str) -> tuple[int, ...]:
    b, c, h, w = images.shape
    return {"image": (b, c, h, w), "pixel": (b, 1, h, w), "grid": (b, 1, *GRID)}[output]


def assert_valid(maps: torch.Tensor, images: torch.Tensor, output: str = "image") -> None:
    assert maps.shape == expected_shape(images, output)
    assert maps.dtype == images.dtype and maps.device == images.device
    assert maps.is_contiguous() and not maps.requires_grad
    assert torch.isfinite(maps).all(), "non-finite map"
    assert (maps >= 0).all() and (maps <= 1).all(), (maps.min(), maps.max())


def run_case(call, images, error, output="image", overflow_ok=False, tuple_in=False):
    """Run ``call``; check it gives a valid map, or exactly the predicted error."""
    if error is not None:
        kind, pattern = error
        event(f"{kind.__name__}: {pattern.replace(chr(92), '')[:40]}")  # unescaped
        with pytest.raises(kind, match=pattern):
            call()
        return None
    try:
        maps = call()
    except ValueError as exc:
        if overflow_ok and re.search(OVERFLOW, str(exc)):
            event("ValueError: score overflow")
            return None
        raise
    event("valid map")
    if tuple_in:
        assert isinstance(maps, tuple) and len(maps) == 1
        (maps,) = maps
    assert_valid(maps, images, output)
    return maps


# --------------------------------------------------------------------------
# images: dtype, size, channels, batch, degenerate content
# --------------------------------------------------------------------------
DEFECTS = ["none"] * 8 + ["no batch", "empty batch", "channels", "size", "integer dtype", "nan or inf"]


@st.composite
def image_cases(draw):
    """Images with at most one planted defect (or an overflow from a huge scale)."""
    defect = draw(st.sampled_from(DEFECTS))
    batch = 0 if defect == "empty batch" else draw(st.integers(1, 3))
    channels = draw(st.sampled_from([1, 4])) if defect == "channels" else 3
    size = (IMAGE, IMAGE)
    if defect == "size":
        size = draw(st.sampled_from([(8, 8), (24, 24), (IMAGE, 32), (32, IMAGE)]))
    dtype = draw(st.sampled_from(NOT_FLOATS if defect == "integer dtype" else FLOATS))
    content = draw(st.sampled_from(["noise", "noise", "constant", "zeros"]))
    scale = draw(st.sampled_from([1e-4, 1.0, 3.0, 300.0, 1.0, 1e30, 1e300]))
    value = draw(st.floats(-5, 5, allow_nan=False))
    bad = ()
    if defect == "nan or inf":
        bad = tuple(draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=2, unique=True)))
    shape = (batch, channels, *size)
    if defect == "no batch":
        shape = shape[1:]
    seed = draw(st.integers(0, 2**16))
    return make_images(seed, shape, dtype, content, scale, value, bad)


@settings(max_examples=300, **SETTINGS)
@given(images=image_cases(), output=st.sampled_from(["image", "pixel", "grid"]),
       as_tuple=st.booleans())
def test_matex_on_any_images_gives_a_valid_map_or_names_the_fix(matex, images, output, as_tuple):
    batch = images.shape[0] if images.ndim == 4 else 1
    phrases = ["left pleural effusion", "right upper lobe opacity", "cardiac silhouette"][:max(batch, 1)]
    inputs = (images,) if as_tuple else images
    diagnostics = []

    def call():
        maps, diag = matex.attribute(inputs, (phrases,), output=output, return_diagnostics=True)
        diagnostics.append(diag)
        return maps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no positive evidence" on flat images
        maps = run_case(call, images, image_error(images), output, overflow_ok=True,
                        tuple_in=as_tuple)
    if maps is not None:  # a map is only given for a score that means something
        assert torch.isfinite(diagnostics[0].score).all()


# --------------------------------------------------------------------------
# text: strings (unicode, empty, whitespace, too long), token ids, embeddings
# --------------------------------------------------------------------------
phrase_strategy = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
    st.text(max_size=24),  # any unicode, also empty
    st.text(alphabet=" \t\n\r\u3000\u2003\x0b", max_size=5),  # whitespace only
    st.lists(st.sampled_from(WORDS), min_size=CONTEXT, max_size=3 * CONTEXT).map(" ".join),
    st.text(max_size=6).map(lambda s: s + "\ud800" + "left"),  # a lone surrogate
)


def phrase_error(phrases: list, batch: int) -> tuple[type[Exception], str] | None:
    if len(phrases) != batch:
        return ValueError, rf"text has {len(phrases)} phrase\(s\) but images has {batch}"
    for i, phrase in enumerate(phrases):
        if not phrase.strip():
            return ValueError, f"phrase {i} is empty"
        if any(0xD800 <= ord(c) <= 0xDFFF for c in phrase):
            return ValueError, f"phrase {i} is not valid Unicode.*encode"
    return None


def ids_error(ids: torch.Tensor, batch: int) -> tuple[type[Exception], str] | None:
    if ids.dtype == torch.bool:
        return TypeError, "pass token ids as integers"
    if ids.shape[1] == 0:
        return ValueError, "must be per-sample"
    if ids.shape[0] != batch:
        return ValueError, f"text has {ids.shape[0]} rows but images has {batch}"
    if ids.shape[1] > CONTEXT:
        return ValueError, f"context is {CONTEXT}; tokenize with truncation"
    if ids.min() < 0 or ids.max() >= VOCAB:
        return ValueError, f"accepts 0..{VOCAB - 1}; tokenize with this model's own tokenizer"
    return None


def embedding_error(emb: torch.Tensor, batch: int) -> tuple[type[Exception], str] | None:
    if emb.shape[0] != batch:
        return ValueError, f"text has {emb.shape[0]} rows but images has {batch}"
    if emb.shape[1] != WIDTH:
        return ValueError, f"width {emb.shape[1]} but .* have {WIDTH}; compute them"
    if not torch.isfinite(emb).all():
        return ValueError, "text embeddings contain NaN or Inf"
    return None


@st.composite
def text_cases(draw, batch: int):
    """``(text, predicted error, whether a truncation warning is due)``."""
    kind = draw(st.sampled_from(["phrases", "phrase", "ids", "embeddings"]))
    rows = draw(st.sampled_from([batch, batch, batch, batch + 1]))
    if kind == "phrase":
        phrase = draw(phrase_strategy)
        return phrase, phrase_error([phrase] * batch, batch), [phrase]
    if kind == "phrases":
        phrases = draw(st.lists(phrase_strategy, min_size=rows, max_size=rows))
        return phrases, phrase_error(phrases, batch), phrases
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if kind == "ids":
        length = draw(st.sampled_from([4, 1, CONTEXT, 4, CONTEXT + 3, 0]))
        low, high = draw(st.sampled_from([(0, VOCAB), (0, VOCAB), (-2, VOCAB), (0, VOCAB + 2)]))
        ids = torch.randint(low, high, (rows, length), generator=g)
        dtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int32, torch.bool]))
        ids = ids.to(dtype)
        return ids, ids_error(ids, batch), None
    width = draw(st.sampled_from([WIDTH, WIDTH, WIDTH, 8]))
    emb = torch.randn(rows, width, generator=g) * draw(st.sampled_from([0.0, 1e-6, 1.0, 1e4]))
    if draw(st.integers(0, 4)) == 0:
        emb[-1, 0] = float("nan")
    emb = emb.to(draw(st.sampled_from(FLOATS)))
    return emb, embedding_error(emb, batch), None


@settings(max_examples=300, **SETTINGS)
@given(data=st.data(), batch=st.integers(1, 3), dtype=st.sampled_from(FLOATS))
def test_matex_on_any_text_gives_a_valid_map_or_names_the_fix(matex, tokenizer, data, batch, dtype):
    images = make_images(batch, (batch, 3, IMAGE, IMAGE), dtype, "noise")
    text, error, phrases = data.draw(text_cases(batch))
    too_long = error is None and phrases is not None and any(
        len(tokenizer(p)["input_ids"]) > CONTEXT for p in phrases
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_case(lambda: matex.attribute(images, (text,)), images, error)
    truncated = [w for w in caught if "truncated" in str(w.message)]
    assert bool(truncated) == too_long, [str(w.message) for w in caught]


# --------------------------------------------------------------------------
# every registered method, and the similarity score itself
# --------------------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(
    name=st.sampled_from(runnable_methods(HFCLIPAdapter)),
    batch=st.integers(1, 3),
    dtype=st.sampled_from(FLOATS),
    content=st.sampled_from(["noise", "noise", "constant", "zeros"]),
    text_kind=st.sampled_from(["phrases", "ids", "embeddings"]),
    output=st.sampled_from(["image", "pixel", "grid"]),
    seed=st.integers(0, 2**16),
)
def test_every_method_gives_a_valid_map_for_valid_and_degenerate_inputs(
    explainers, model, tokenizer, name, batch, dtype, content, text_kind, output, seed
):
    images = make_images(seed, (batch, 3, IMAGE, IMAGE), dtype, content, value=seed % 7 - 3.0)
    phrases = [" ".join(WORDS[(seed + 3 * i) % len(WORDS)] for i in range(k + 1)) for k in range(batch)]
    ids = tokenizer(phrases, padding="max_length", max_length=CONTEXT, return_tensors="pt")["input_ids"]
    if text_kind == "phrases":
        text = phrases
    elif text_kind == "ids":
        text = ids
    else:
        with torch.no_grad():
            features = model.get_text_features(input_ids=ids)
        text = getattr(features, "pooler_output", features).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        maps = explainers[name].attribute(images, (text,), output=output)
    assert_valid(maps, images, output)
    event(f"method: {name}")


@settings(max_examples=150, **SETTINGS)
@given(images=image_cases())
def test_similarity_forward_scores_or_names_the_fix(model, tokenizer, images):
    forward = SimilarityForward(model, tokenizer)
    batch = images.shape[0] if images.ndim == 4 else 1
    error = image_error(images)
    if error is not None:
        event(f"{error[0].__name__}: {error[1].replace(chr(92), '')[:40]}")
        with pytest.raises(error[0], match=error[1]):
            forward(images, ["left"] * batch)
        return
    try:
        score = forward(images, ["left"] * batch)
    except ValueError as exc:
        assert re.search(OVERFLOW, str(exc)), exc
        event("ValueError: score overflow")
        return
    event("score")
    assert score.shape == (batch,) and torch.isfinite(score).all()
    assert (score.abs() <= 1 + 1e-2).all()  # a cosine (bfloat16 rounding allowed)
