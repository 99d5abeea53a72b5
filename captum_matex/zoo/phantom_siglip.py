r"""
The embedded phantom SigLIP: a small SigLIP trained on the chest phantom.

``phantom_siglip()`` loads a transformers :class:`~transformers.SiglipModel`
(112 px input, 8 px patches, so a 14 x 14 patch grid, and the ``map``
attention-pooling head) and its processor from files shipped inside the
package (``config.json``, ``model.safetensors``, ``tokenizer.json`` and the
processor configs), offline and without unpickling anything. It was trained
on :class:`~captum_matex.data.PhantomCXR` with SigLIP's pairwise sigmoid loss
by ``tools/train_phantom.py --family siglip`` (see ``phantom_siglip/TRAINING.md``).

It shares the phantom CLIP's image preprocessing and word-level tokenizer
(:func:`~captum_matex.zoo.phantom_clip.build_processor`), with SigLIP's text
convention: phrases are padded to :data:`CONTEXT_LENGTH` (16) tokens, the
model reads no attention mask, and the text embedding is the last position's
(a ``<pad>`` token, since no phrase fills the context). Use the processor
returned by :func:`phantom_siglip` (:class:`PhantomSiglipProcessor`), which
does both; the ``processor_config.json`` on disk names the plain
``CLIPProcessor``, which would pad to the longest phrase instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import torch

from captum_matex.zoo.phantom_clip import (
    CONTEXT_LENGTH,
    PhantomCLIPProcessor,
    build_tokenizer,
    load_embedded,
    tower_settings,
)
from captum_matex.zoo.phantom_clip import _image_processor

__all__ = [
    "MODEL_DIR",
    "LOGIT_SCALE_INIT",
    "LOGIT_BIAS_INIT",
    "PhantomSiglipProcessor",
    "build_config",
    "build_siglip_processor",
    "init_logit_parameters",
    "phantom_siglip",
]

MODEL_DIR = Path(__file__).resolve().parent / "phantom_siglip"
#: SigLIP's initial logit scale ``t`` (the logit is ``exp(t) cos + b``) and bias
LOGIT_SCALE_INIT = math.log(10.0)
LOGIT_BIAS_INIT = -10.0


class PhantomSiglipProcessor(PhantomCLIPProcessor):
    r"""
    :class:`~captum_matex.zoo.phantom_clip.PhantomCLIPProcessor` with
    SigLIP's text convention.

    Text is padded to ``max_length`` (:data:`CONTEXT_LENGTH`) and no
    ``attention_mask`` is returned, as the model was trained: SigLIP's text
    tower reads the last position without a mask. Images are processed as
    for the phantom CLIP (grayscale arrays, tensors and PIL images accepted).

    Args:

        image_processor: A CLIP image processor.
        tokenizer: The phantom word-level tokenizer.
    """

    def __call__(  # type: ignore[override]
        self,
        images: Any = None,
        text: Union[str, List[str], None] = None,
        **kwargs: Any,
    ) -> Any:
        r"""
        Tokenise ``text`` (padded to 16 tokens, no attention mask) and
        preprocess ``images``.

        Args:

            images (image or list of images, optional): PIL images, numpy
                arrays or tensors (grayscale or RGB).
            text (str or list of str, optional): Phrases.
            **kwargs: Forwarded to ``CLIPProcessor.__call__``.

        Returns:
            transformers.BatchEncoding: ``input_ids`` and/or
            ``pixel_values``.
        """
        if text is not None:
            kwargs.setdefault("padding", "max_length")
            kwargs.setdefault("max_length", CONTEXT_LENGTH)
        out = super().__call__(images=images, text=text, **kwargs)
        out.pop("attention_mask", None)
        return out


def build_siglip_processor(tokenizer: Any = None) -> PhantomSiglipProcessor:
    r"""
    Build the processor (phantom image processor + word-level tokenizer).

    Args:

        tokenizer (optional): Tokenizer to use. Default:
            :func:`~captum_matex.zoo.phantom_clip.build_tokenizer`.

    Returns:
        PhantomSiglipProcessor: The processor.
    """
    return PhantomSiglipProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
    )


def build_config(
    vocab_size: int,
    vision_width: int = 128,
    vision_layers: int = 4,
    text_width: int = 128,
    text_layers: int = 2,
) -> Any:
    r"""
    Configuration of the phantom SigLIP (14 x 14 patch grid, ``map`` head).

    The joint embedding size is the vision width (the ``map`` head's output);
    the text head projects to it (``projection_size``).

    Args:

        vocab_size (int): Tokenizer vocabulary size.
        vision_width (int, optional): Vision hidden size. Default: 128
        vision_layers (int, optional): Vision blocks. Default: 4
        text_width (int, optional): Text hidden size. Default: 128
        text_layers (int, optional): Text blocks. Default: 2

    Returns:
        transformers.SiglipConfig: The configuration.
    """
    from transformers import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

    text_settings, vision_settings = tower_settings(
        vocab_size, vision_width, vision_layers, text_width, text_layers
    )
    text = SiglipTextConfig(**text_settings, projection_size=vision_width)
    vision = SiglipVisionConfig(**vision_settings, vision_use_head=True)
    return SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


def init_logit_parameters(model: Any) -> None:
    r"""
    Set a new model's logit scale to ``log(10)`` and bias to ``-10``, as
    SigLIP initialises them (transformers' init zeroes both); both stay
    trainable.

    Args:

        model (transformers.SiglipModel): A freshly built model.
    """
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE_INIT)
        model.logit_bias.fill_(LOGIT_BIAS_INIT)
    model.logit_scale.requires_grad_(True)
    model.logit_bias.requires_grad_(True)


def phantom_siglip(
    path: Optional[Union[str, os.PathLike]] = None,
    attn_implementation: str = "eager",
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[Any, PhantomSiglipProcessor]:
    r"""
    Load the embedded phantom SigLIP model and its processor, offline.

    Only package files are read (safetensors weights, JSON configs); the
    Hugging Face hub is never contacted.

    Args:

        path (str or PathLike, optional): Directory to load from. Default:
            the files shipped in ``captum_matex/zoo/phantom_siglip``.
        attn_implementation (str, optional): Attention backend passed to
            transformers. Default: ``"eager"``
        device (str or torch.device, optional): Device to move the model
            to. Default: CPU.

    Returns:
        tuple: ``(model, processor)``: a :class:`transformers.SiglipModel`
        in eval mode and a :class:`PhantomSiglipProcessor`.

    Examples::

        >>> model, processor = phantom_siglip()
        >>> batch = processor(text=["left pleural effusion"],
        ...                   images=[sample.image], return_tensors="pt")
        >>> logit = model(**batch).logits_per_image  # exp(t) cos + b
    """
    from transformers import SiglipModel

    return load_embedded(path or MODEL_DIR, SiglipModel, PhantomSiglipProcessor,
                         "--family siglip ", attn_implementation, device)
