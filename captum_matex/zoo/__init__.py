r"""
Embedded default models, loadable offline from package files.

- :func:`phantom_clip`: a small CLIP trained on the chest-radiograph
  phantom (:class:`captum_matex.data.PhantomCXR`), with a 14 x 14 patch grid.
- :func:`evaluate_zero_shot`: finding and side accuracy of a model on the
  phantom.
"""

from captum_matex.zoo.phantom_clip import (
    CONTEXT_LENGTH,
    MODEL_DIR,
    PhantomCLIPProcessor,
    build_config,
    build_processor,
    build_tokenizer,
    evaluate_zero_shot,
    phantom_clip,
    save_pretrained,
)

__all__ = [
    "CONTEXT_LENGTH",
    "MODEL_DIR",
    "PhantomCLIPProcessor",
    "build_config",
    "build_processor",
    "build_tokenizer",
    "evaluate_zero_shot",
    "phantom_clip",
    "save_pretrained",
]
