"""Name -> attribution class registry, so benchmarks and the CLI pick methods by name."""

from __future__ import annotations

from typing import Callable, TypeVar

from captum.attr import Attribution

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type[Attribution]] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(name: str) -> Callable[[T], T]:
    r"""Class decorator registering an attribution class under ``name``.

    Names are case-insensitive; ``-`` and ``_`` are interchangeable.

    Args:
        name (str): registry name, e.g. ``"m2ib"``.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: ``name`` is already taken by another class.
    """

    def decorator(cls: T) -> T:
        key = _key(name)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"attribution name {name!r} is already registered")
        _REGISTRY[key] = cls
        return cls

    return decorator


def get(name: str) -> type[Attribution]:
    r"""The attribution class registered under ``name``.

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
    try:
        return _REGISTRY[_key(name)]
    except KeyError:
        raise KeyError(
            f"no attribution method named {name!r}; available: {', '.join(available())}"
        ) from None


def available() -> list[str]:
    r"""Registered method names, sorted.

    Returns:
        list[str]: names accepted by :func:`get`.
    """
    return sorted(_REGISTRY)
