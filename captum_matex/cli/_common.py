r"""What every ``matex`` command shares: the user-facing error, the output
folder check, figure saving and model loading."""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from captum_matex import registry
from captum_matex._quiet import quiet_third_party


class CLIError(Exception):
    r"""A user-facing error: printed on one line without a traceback, exit status 2."""


def prepare_out(out: Path, names: Sequence[str], force: bool) -> None:
    r"""Create ``out``, refusing (unless ``force``) when it already holds one of ``names``.

    Args:
        out (Path): The output folder.
        names (Sequence[str]): Every file the command writes into it.
        force (bool): Overwrite those files.

    Raises:
        CLIError: ``out`` is a file, or holds one of ``names`` without ``force``.
    """
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; choose a directory")
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise CLIError(
            f"{out} already holds {', '.join(existing[:3])}"
            f"{' ...' if len(existing) > 3 else ''}; pass --force to overwrite or "
            "choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)


def save(fig: Any, path: Path) -> None:
    r"""Write the matplotlib figure ``fig`` to ``path``, trimmed to its content."""
    fig.savefig(path, bbox_inches="tight")


def load_model(path: str | None, device: str) -> tuple[Any, Any, str]:
    r"""The model named by ``--model`` (``None``: the embedded phantom model).

    Args:
        path (str or None): What :func:`~captum_matex.loading.load_model` loads.
        device (str): torch device.

    Returns:
        tuple: ``(model, processor, name)``, the model on ``device``.

    Raises:
        CLIError: the model cannot be loaded (the message says why).
    """
    from captum_matex.loading import ModelLoadError
    from captum_matex.loading import load_model as load

    try:
        model, processor = load(path, device)
    except ModelLoadError as exc:
        raise CLIError(str(exc)) from exc
    return model, processor, path or "embedded phantom_clip"


def load_plugins() -> None:
    r"""Load every plugin entry point now and print each skipped one as a
    ``matex: warning:`` line on stderr (other warnings pass through)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", registry.PluginWarning)
        registry.broken_plugins()
    for warning in caught:
        if issubclass(warning.category, registry.PluginWarning):
            print(f"matex: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)


def quietly(command: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    r"""Run the command ``command(args)`` with third-party loading messages and
    progress bars hidden, unless ``args.verbose``
    (:func:`~captum_matex._quiet.quiet_third_party`)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> dict:
        with quiet_third_party(args.verbose):
            return command(args)

    return run
