r"""
The ``matex`` command line: ``matex explain``, ``matex demo`` and ``matex
benchmark``, one module per command; :func:`main` is the console script.

Examples::

    >>> from captum_matex.cli import main
    >>> main(["benchmark", "--list"])
    0
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from captum_matex.cli import benchmark as _benchmark
from captum_matex.cli import demo as _demo
from captum_matex.cli import explain as _explain
from captum_matex.cli._common import CLIError
from captum_matex.cli.demo import demo  # the command functions; their modules stay in sys.modules
from captum_matex.cli.explain import REAL_MODEL, explain

__all__ = ["CLIError", "REAL_MODEL", "build_parser", "demo", "explain", "main"]


def build_parser() -> argparse.ArgumentParser:
    r"""The ``matex`` argument parser.

    Returns:
        argparse.ArgumentParser: With the ``explain``, ``demo`` and
        ``benchmark`` sub-commands; each sets ``func`` to its entry.
    """
    parser = argparse.ArgumentParser(
        prog="matex",
        description="Explain what a medical vision-language model looks at (MATEX, Captum).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (_explain, _demo, _benchmark):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of the ``matex`` console script.

    Args:
        argv (Sequence[str], optional): The arguments; default ``sys.argv[1:]``.

    Returns:
        int: The exit status: 0, or 2 after a :class:`CLIError` (printed on
        one line on stderr).
    """
    args = build_parser().parse_args(argv)
    torch.set_grad_enabled(True)
    try:
        args.func(args)
    except CLIError as exc:
        print(f"matex: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
