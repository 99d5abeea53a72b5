r"""The method half of :mod:`captum_matex.registry`, under the names the baselines
have always used: :func:`register`, :func:`get` and :func:`available`."""

from __future__ import annotations

from typing import Callable, TypeVar

from captum.attr import Attribution

from captum_matex.registry import methods

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    r"""Class decorator registering an attribution class under ``name``.

    Names are case-insensitive; ``-`` and ``_`` are interchangeable. Packages
    outside captum_matex can instead declare the class in the
    ``captum_matex.methods`` entry-point group (see :mod:`captum_matex.registry`).

    Args:
        name (str): registry name, e.g. ``"m2ib"``.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        TypeError: the class is not a Captum ``Attribution``.
        ValueError: ``name`` is already taken by another class.
    """

    def decorator(cls: T) -> T:
        return methods.register(name, cls)

    return decorator


def get(name: str) -> type[Attribution]:
    r"""The attribution class registered under ``name`` (built-in or plugin).

    Args:
        name (str): a name from :func:`available` (case-insensitive).

    Returns:
        The class (instantiate it with the model, e.g. ``get("m2ib")(model)``).

    Raises:
        KeyError: unknown name; the message lists the registered names.

    Examples::

        >>> from captum_matex import baselines
        >>> explainer = baselines.get("m2ib")(model, processor)
    """
    return methods.get(name)


def available() -> list[str]:
    r"""Registered method names (built-in and plugin), sorted.

    Returns:
        list[str]: names accepted by :func:`get`.
    """
    return methods.available()
