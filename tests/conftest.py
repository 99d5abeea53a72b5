"""Shared fixtures: tiny random-initialised CLIP models built from configs (no download)."""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
)

WORDS = (
    "left right bilateral upper mid lower lobe base apex opacity effusion pleural small "
    "large enlarged cardiac silhouette pneumothorax nodule edema consolidation heart "
    "the at of no acute process"
).split()


def make_tokenizer(context: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: [PAD]=0, [BOS]=1, [UNK]=2, [EOS]=3, then WORDS."""
    vocab = {"[PAD]": 0, "[BOS]": 1, "[UNK]": 2, "[EOS]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(WORDS)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    core.post_processor = TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        model_max_length=context,
    )


def make_clip(
    layers: int = 3, image_size: int = 32, patch: int = 8, width: int = 32, seed: int = 0
) -> CLIPModel:
    """A random CLIPModel with ``layers`` vision blocks (SDPA attention, as loaded by default)."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(WORDS) + 4,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def make_siglip(
    version: int = 1, layers: int = 3, image_size: int = 32, patch: int = 8, width: int = 32,
    seed: int = 0,
) -> SiglipModel | Siglip2Model:
    """A random SigLIP (``version=1``) or SigLIP 2 (NaFlex, ``version=2``) dual encoder
    with a ``map`` head, SDPA attention as loaded by default, and a logit scale
    and bias away from the config's 1 and 0 (else the sigmoid logit equals the
    cosine and a test could not tell them apart)."""
    torch.manual_seed(seed)
    text = dict(
        vocab_size=len(WORDS) + 4, hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
        pad_token_id=0, bos_token_id=1, eos_token_id=3,
    )
    vision = dict(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=2, patch_size=patch,
    )
    if version == 1:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(vision, image_size=image_size)))
    else:
        grid = image_size // patch
        model = Siglip2Model(Siglip2Config(text_config=text, vision_config=dict(vision, num_patches=grid * grid)))
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    return model.eval()


#: Threads for tests of tiny models: 1 by default (far faster on a shared CPU,
#: no thread contention); CI reruns the numerics tests with 4 to surface
#: results that depend on how a reduction is split across threads.
TEST_THREADS = int(os.environ.get("MATEX_TEST_THREADS", "1"))


def pytest_configure(config: pytest.Config) -> None:
    """``MATEX_TEST_DETERMINISTIC=1`` runs the suite under
    ``torch.use_deterministic_algorithms(True)`` (a CI step does)."""
    if os.environ.get("MATEX_TEST_DETERMINISTIC") == "1":
        torch.use_deterministic_algorithms(True)


@pytest.fixture(scope="module")
def tiny_threads():
    """Run a module's tiny models on :data:`TEST_THREADS` threads; use with
    ``pytestmark = pytest.mark.usefixtures("tiny_threads")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def exact_float32():
    """TF32 off on CUDA for the test: TF32 convolutions and matmuls would make
    CUDA results differ from the CPU's by ~1e-3 relative."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.fixture
def clip_model() -> CLIPModel:
    return make_clip()


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


PHRASES = [
    "small left pleural effusion",
    "right upper lobe opacity",
    "enlarged cardiac silhouette",
    "opacity at the left base",
]
