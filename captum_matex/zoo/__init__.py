r"""
Embedded default models, loadable offline from package files.

- :func:`phantom_clip`: a small CLIP trained on the chest-radiograph
  phantom (:class:`captum_matex.data.PhantomCXR`), with a 14 x 14 patch grid.
- :func:`phantom_siglip`: a small SigLIP (``map`` attention-pooling head,
  sigmoid logit) trained on the same phantom, with the same grid.
- :func:`phantom_llava`: a small LLaVA (the phantom CLIP's vision tower,
  a Llama decoder) that writes a findings report of a phantom film from the
  prompt :data:`PHANTOM_LLAVA_PROMPT`; :func:`evaluate_generation` scores
  its greedy reports.
- :func:`phantom_atlas` / :func:`phantom_prior`: the anatomical prior fitted
  to the phantom's mean anatomy.
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
from captum_matex.zoo.phantom_atlas import phantom_atlas, phantom_prior
from captum_matex.zoo.phantom_llava import (
    PHANTOM_LLAVA_PROMPT,
    PhantomLlavaProcessor,
    evaluate_generation,
    phantom_llava,
)
from captum_matex.zoo.phantom_siglip import PhantomSiglipProcessor, phantom_siglip

__all__ = [
    "CONTEXT_LENGTH",
    "MODEL_DIR",
    "PHANTOM_LLAVA_PROMPT",
    "PhantomCLIPProcessor",
    "PhantomLlavaProcessor",
    "PhantomSiglipProcessor",
    "build_config",
    "build_processor",
    "build_tokenizer",
    "evaluate_generation",
    "evaluate_zero_shot",
    "phantom_atlas",
    "phantom_clip",
    "phantom_llava",
    "phantom_prior",
    "phantom_siglip",
    "save_pretrained",
]
