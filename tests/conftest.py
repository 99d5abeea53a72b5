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


#: token id of the image placeholder in the tiny generative models (after the tokenizer's words)
IMAGE_TOKEN_ID = len(WORDS) + 4


def make_generative(family: str, layers: int = 3, image_size: int = 32, seed: int = 0):
    r"""A random tiny image-to-text model built from its config (eager-free: SDPA,
    as loaded by default): ``"llava"`` (CLIP tower, class token dropped, the
    projector reads block -2), ``"llava-full"`` (the same, class token read),
    ``"llava-siglip"`` (SigLIP tower, ``"full"``),
    ``"paligemma"`` or ``"gemma3"`` (its image tokens pooled 2 x 2). The
    decoder's vocabulary is the word-level tokenizer's plus the image tokens."""
    from transformers import (
        Gemma3Config, Gemma3ForConditionalGeneration, LlavaConfig, LlavaForConditionalGeneration,
        PaliGemmaConfig, PaliGemmaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    vocab = IMAGE_TOKEN_ID + 3  # words, <image>, and Gemma 3's begin/end-of-image tokens
    width = 32
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=2, image_size=image_size, patch_size=8)
    decoder = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                   max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=3)
    if family in ("llava", "llava-full", "llava-siglip"):
        clip = family != "llava-siglip"
        config = LlavaConfig(
            vision_config=dict(vision, model_type="clip_vision_model" if clip else "siglip_vision_model"),
            text_config=dict(decoder, model_type="llama"),
            image_token_id=IMAGE_TOKEN_ID, vision_feature_layer=-2,
            vision_feature_select_strategy="default" if family == "llava" else "full",
        )
        model = LlavaForConditionalGeneration(config)
    elif family == "paligemma":
        config = PaliGemmaConfig(
            vision_config=dict(vision, model_type="siglip_vision_model", projection_dim=width),
            text_config=dict(decoder, model_type="gemma", head_dim=8), image_token_id=IMAGE_TOKEN_ID,
            projection_dim=width, hidden_size=width,
        )
        model = PaliGemmaForConditionalGeneration(config)
    elif family == "gemma3":
        config = Gemma3Config(
            vision_config=dict(vision, model_type="siglip_vision_model", patch_size=4),
            text_config=dict(decoder, model_type="gemma3_text", head_dim=8, sliding_window=8),
            image_token_index=IMAGE_TOKEN_ID, boi_token_index=IMAGE_TOKEN_ID + 1,
            eoi_token_index=IMAGE_TOKEN_ID + 2, mm_tokens_per_image=16,
        )
        model = Gemma3ForConditionalGeneration(config)
        with torch.no_grad():  # initialised to zeros: the image would not reach the decoder
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.5)
    else:
        raise ValueError(family)
    return model.eval()
