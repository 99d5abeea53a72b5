r"""
Keeping third-party chatter (transformers' and huggingface_hub's progress bars,
loading reports, hub and tokenizer warnings) out of the ``matex`` command's
output, and putting the user's settings back afterwards.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from contextlib import ExitStack, contextmanager
from typing import Iterator

__all__ = ["THIRD_PARTY_MODULES", "VERBOSE_HELP", "quiet_third_party"]

#: ``--verbose`` help of the commands that use :func:`quiet_third_party`.
VERBOSE_HELP = ("show third-party loading messages, progress bars and warnings "
                "(transformers, huggingface_hub), hidden by default")

#: Modules whose Python warnings are hidden (a regular expression on the
#: module that issues the warning).
THIRD_PARTY_MODULES = r"(transformers|huggingface_hub|tokenizers|open_clip|timm|torchvision)(\.|$)"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    r"""transformers' logging at ERROR and its progress bars off; both restored on exit."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()


@contextmanager
def _quiet_hub() -> Iterator[None]:
    r"""huggingface_hub's logging at ERROR and its progress bars off; both restored on exit.

    The progress-bar switches are restored by copying back the hub's own table
    of them (``huggingface_hub.utils.tqdm.progress_bar_states``), which also
    undoes what transformers' switch did to it.
    """
    try:
        from huggingface_hub import utils as hub_utils
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:  # pragma: no cover - a transformers dependency
        yield
        return
    # the module: ``huggingface_hub.utils.tqdm`` as an attribute is its tqdm class
    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    verbosity = hub_logging.get_verbosity()
    states = dict(getattr(hub_tqdm, "progress_bar_states", {}))
    hub_logging.set_verbosity(logging.ERROR)
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
        table = getattr(hub_tqdm, "progress_bar_states", None)
        if table is not None:
            table.clear()
            table.update(states)


@contextmanager
def quiet_third_party(verbose: bool = False) -> Iterator[None]:
    r"""
    Silence third-party progress bars, loading messages and warnings while
    the block runs, then restore the user's settings.

    Within the block, transformers' and huggingface_hub's loggers are at
    ``ERROR``, their progress bars ("Loading weights", downloads) are off,
    and Python warnings issued by :data:`THIRD_PARTY_MODULES` are ignored.
    On exit the verbosities, the progress-bar switches and the warning
    filters are what they were, whether the block returned or raised. Our own
    warnings and progress bars (plain ``tqdm``) are untouched.

    Args:
        verbose (bool, optional): Leave everything as it is (``--verbose``).
            Default: False

    Examples::

        >>> with quiet_third_party(args.verbose):
        ...     model, processor = load_model(path)
    """
    if verbose:
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module=THIRD_PARTY_MODULES)
        stack.enter_context(_quiet_hub())
        stack.enter_context(_quiet_transformers())
        yield
