r"""Which method runs on which model family, read from the registry.

Every registered method declares what it needs of a model
(:attr:`~captum_matex.explainer.VisionLanguageAttribution.requires`, e.g. a
class token) and every registered adapter what its family offers
(:attr:`~captum_matex.adapters.VisionLanguageAdapter.capabilities`), so the
table is computed, never written by hand; the documentation's support matrix
is :func:`support_table` at build time.
"""

from __future__ import annotations

from captum_matex import registry

__all__ = ["runnable_methods", "support_matrix", "support_table"]


def runnable_methods(adapter) -> list[str]:
    r"""Names of the registered methods that run on ``adapter``'s family (an
    adapter class or instance), in the registry's order; the others refuse it
    by name.

    Examples::

        >>> from captum_matex.adapters import HFCLIPAdapter
        >>> "m2ib" in runnable_methods(HFCLIPAdapter)
        True
    """
    return [
        name for name in registry.methods.available()
        if adapter.refusal(name, registry.methods.get(name).requires) is None
    ]


def support_matrix() -> dict[str, dict[str, str | None]]:
    r"""Method name -> adapter family -> ``None`` when the method runs on that
    family, else the refusal message its constructor raises.

    Returns:
        dict: rows in the registry's method order, columns in the adapter order
        :func:`~captum_matex.adapters.get_adapter` tries.
    """
    adapters = registry.adapters.objects()
    return {
        name: {
            adapter.family: adapter.refusal(method.get_name(), method.requires)
            for adapter in adapters
        }
        for name, method in ((n, registry.methods.get(n)) for n in registry.methods.available())
    }


def support_table() -> str:
    r"""The support matrix as a reStructuredText list table: ✓ where a method
    runs, otherwise what it needs, with each family's reason under the table."""
    adapters = registry.adapters.objects()
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - method",
        *[f"     - ``{adapter.family}``" for adapter in adapters],
    ]
    reasons: dict[str, str] = {}
    for name in registry.methods.available():
        method = registry.methods.get(name)
        lines.append(f"   * - {method.get_name()} (``{name}``)")
        for adapter in adapters:
            missing = sorted(set(method.requires) - set(adapter.capabilities))
            lines.append("     - ✓" if not missing else f"     - ✗ needs a {' and a '.join(missing)}")
            for capability in missing:
                reasons[f"``{adapter.family}`` ({capability})"] = adapter.missing.get(
                    capability, f"have no {capability}"
                )
    lines.append("")
    lines += [f"* {where}: these models {why}." for where, why in reasons.items()]
    return "\n".join(lines) + "\n"
