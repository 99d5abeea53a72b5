r"""
One registry of the attribution methods, metrics and model adapters, extended
by installed packages through entry points.

Three :class:`Registry` objects share one API: :data:`methods` (Captum
``Attribution`` classes, built as ``cls(model, processor)``), :data:`metrics`
(:class:`MetricInfo`) and :data:`adapters` (adapter classes with a
``supports(model)`` class- or static method). Built-ins are imported from the
module that defines them on the first lookup; third-party entries come from
the entry-point groups ``captum_matex.methods``, ``captum_matex.metrics`` and
``captum_matex.adapters``, read once and cached. A plugin that cannot be
imported, has the wrong type or takes a built-in's name is skipped with a
:class:`PluginWarning` naming it, and listed by :func:`broken_plugins`; it
never stops a run. Every entry says where it comes from
(:attr:`Entry.origin`: ``"built-in"`` or the distribution and its version).

A plugin package declares its entries in its ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."captum_matex.methods"]
    my_method = "my_package.methods:MyAttribution"

    [project.entry-points."captum_matex.metrics"]
    my_metric = "my_package.metrics:MY_METRIC"   # a MetricInfo

Examples::

    >>> from captum_matex import registry
    >>> explainer = registry.methods.get("m2ib")(model, processor)
    >>> registry.metrics.get("cnr").higher_is_better
    True
    >>> {e.name: e.origin for e in registry.methods.entries()}["matex"]
    'built-in'
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from captum.attr import Attribution

__all__ = [
    "BUILT_IN",
    "BrokenPlugin",
    "Entry",
    "MetricInfo",
    "PluginWarning",
    "Registry",
    "adapters",
    "broken_plugins",
    "methods",
    "metrics",
    "normalize_name",
    "reset_plugins",
]

T = TypeVar("T")

#: :attr:`Entry.origin` of the entries that ship with captum_matex.
BUILT_IN = "built-in"
#: Metric categories; each has its own call signature (see :class:`MetricInfo`).
CATEGORIES = ("localisation", "faithfulness", "sanity")
#: Values of :attr:`MetricInfo.benchmark`.
BENCHMARK_USES = ("default", "optional", "unsupported")
#: Values of :attr:`MetricInfo.compares` (the second map batch of a sanity metric).
COMPARISONS = ("randomised", "swapped")
#: Values of :attr:`MetricInfo.maps` (what the benchmark hands a faithfulness metric).
MAP_FORMS = ("raw", "minmax")


class PluginWarning(UserWarning):
    r"""A plugin entry point was skipped; the message names it and says why."""


@dataclass(frozen=True)
class MetricInfo:
    r"""What the benchmark and the report need to know about one metric.

    The category fixes how the metric is called: localisation metrics take
    ``(maps, masks)``; faithfulness metrics ``(forward_func, images, maps,
    additional_forward_args)`` (and the benchmark's curve step as
    ``patch_size=`` when the function accepts that keyword); sanity metrics
    two batches of maps, the second named by :attr:`compares`. Each returns
    one value per sample, ``(B,)``.

    Attributes:
        fn (Callable): The metric function.
        higher_is_better (bool): The score direction.
        category (str): ``"localisation"``, ``"faithfulness"`` or ``"sanity"``.
        range (tuple): ``(low, high)`` of the score (``inf`` where unbounded).
        description (str): One line for tables and ``matex benchmark --list``.
        benchmark (str, optional): ``"default"``: ``matex benchmark`` scores it
            unless ``--metrics`` chooses otherwise; ``"optional"``: only when
            named in ``--metrics`` (costly); ``"unsupported"``: the benchmark
            cannot call it (a different signature). Default: ``"default"``.
        maps (str, optional): For faithfulness metrics: ``"raw"`` maps or
            ``"minmax"`` (each map min-max normalised to [0, 1] first).
            Default: ``"raw"``.
        compares (str or None, optional): For sanity metrics: the maps that
            ``fn`` compares the method's maps with, ``"randomised"`` (the same
            method on a randomised model) or ``"swapped"`` (the phrase with its
            side swapped). Default: None.

    Raises:
        ValueError: a field has a value outside the choices above.

    Examples::

        >>> from captum_matex.registry import MetricInfo
        >>> info = MetricInfo(mass_ratio, True, "localisation", (0.0, float("inf")),
        ...                   "mean in boxes / mean overall")
    """

    fn: Callable
    higher_is_better: bool
    category: str
    range: tuple
    description: str
    benchmark: str = "default"
    maps: str = "raw"
    compares: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not callable(self.fn):
            problems.append(f"fn must be callable, got {type(self.fn).__name__}")
        for field_name, value, choices in (
            ("category", self.category, CATEGORIES),
            ("benchmark", self.benchmark, BENCHMARK_USES),
            ("maps", self.maps, MAP_FORMS),
        ):
            if value not in choices:
                problems.append(f"{field_name} must be one of {', '.join(choices)}; got {value!r}")
        if self.category == "sanity" and self.compares not in COMPARISONS:
            problems.append(f"a sanity metric needs compares= one of {', '.join(COMPARISONS)}; "
                            f"got {self.compares!r}")
        if problems:
            raise ValueError("MetricInfo: " + "; ".join(problems))

    def accepts(self, keyword: str) -> bool:
        r"""Whether :attr:`fn` takes the keyword argument ``keyword``.

        Args:
            keyword (str): An argument name, e.g. ``"patch_size"``.

        Returns:
            bool: True when ``fn(..., keyword=value)`` is a valid call.
        """
        try:
            parameters = inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            return False
        return keyword in parameters or any(
            p.kind is p.VAR_KEYWORD for p in parameters.values()
        )


@dataclass(frozen=True)
class Entry(Generic[T]):
    r"""One registered object and where it comes from.

    Attributes:
        name (str): The registry name.
        obj: The class or :class:`MetricInfo`.
        origin (str): :data:`BUILT_IN`, ``"<distribution> <version>"`` for a
            plugin, or ``"registered in <module>"`` for an object registered
            at run time by code outside captum_matex.
    """

    name: str
    obj: T
    origin: str


@dataclass(frozen=True)
class BrokenPlugin:
    r"""An entry point that was skipped.

    Attributes:
        group (str): The entry-point group, e.g. ``"captum_matex.methods"``.
        name (str): The entry point's name.
        value (str): What it points at, ``"module:attribute"``.
        origin (str): ``"<distribution> <version>"`` that declares it.
        error (str): Why it was skipped, ``"<ExceptionType>: <message>"``.
    """

    group: str
    name: str
    value: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"{self.group}: {self.name} = {self.value} (from {self.origin}): {self.error}"


def normalize_name(name: str) -> str:
    r"""The registry key of ``name``: lower case, ``-`` and spaces as ``_``.

    Args:
        name (str): A method, metric or adapter name.

    Returns:
        str: The key, e.g. ``"grad_eclip"`` for ``"Grad-ECLIP"``.
    """
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _origin(obj: Any) -> str:
    r"""Where an object registered in-process comes from, judged by its module."""
    target = getattr(obj, "fn", obj)
    target = getattr(target, "func", target)  # functools.partial
    module = getattr(target, "__module__", None) or "an unknown module"
    return BUILT_IN if module.split(".")[0] == "captum_matex" else f"registered in {module}"


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


class Registry(Generic[T]):
    r"""Names to objects of one kind: built-ins, run-time registrations and plugins.

    Args:
        kind (str): What is registered, for messages (``"method"``).
        group (str): The entry-point group of plugins.
        provider (str): The module that fills :attr:`table` with the built-ins
            when imported, or ``"module:attribute"`` naming an iterable of
            built-ins to register under :attr:`name_of` their items.
        check (Callable): ``check(obj)`` returns None for a valid object, or
            why it is not one.
        name_of (Callable, optional): The name of a built-in listed by
            ``provider``'s attribute. Default: None.

    Attributes:
        table (dict): Built-in and run-time entries, name to object, in
            registration order (``captum_matex.metrics.METRICS`` is this dict
            for metrics). Plugins are kept apart.
    """

    def __init__(self, kind: str, group: str, provider: str,
                 check: Callable[[Any], str | None],
                 name_of: Callable[[Any], str] | None = None) -> None:
        self.kind = kind
        self.group = group
        self.provider = provider
        self.check = check
        self.name_of = name_of
        self.table: dict[str, T] = {}
        self._provided = False
        self._plugins: dict[str, Entry[T]] | None = None
        self._broken: list[BrokenPlugin] = []

    # -- built-ins and run-time registrations ------------------------------------------------

    def register(self, name: str, obj: T) -> T:
        r"""Register ``obj`` under ``name`` (built-ins and run-time additions).

        Args:
            name (str): The name; case-insensitive, ``-`` and ``_`` interchangeable.
            obj: The object; it must pass the registry's check.

        Returns:
            The object, unchanged (so this can end a class decorator).

        Raises:
            TypeError: ``obj`` is not of the registry's kind.
            ValueError: ``name`` is taken by another object.
        """
        key = normalize_name(name)
        problem = self.check(obj)
        if problem:
            raise TypeError(f"cannot register {self.kind} {name!r}: {problem}")
        taken = self.table.get(key)
        if taken is None and self._plugins is not None and key in self._plugins:
            taken = self._plugins[key].obj
        if taken is not None and taken is not obj:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self.table[key] = obj
        return obj

    def _builtins(self) -> dict[str, T]:
        r""":attr:`table`, after importing the built-ins' provider (once)."""
        if not self._provided:
            self._provided = True
            module_name, _, attribute = self.provider.partition(":")
            module = importlib.import_module(module_name)
            if attribute:
                for obj in getattr(module, attribute):
                    self.table.setdefault(normalize_name(self.name_of(obj)), obj)
        return self.table

    # -- plugins ------------------------------------------------------------------------------

    def _plugin_entries(self) -> dict[str, Entry[T]]:
        r"""The valid plugins of :attr:`group`, loaded on the first call."""
        if self._plugins is not None:
            return self._plugins
        builtins = self._builtins()
        plugins: dict[str, Entry[T]] = {}
        broken: list[BrokenPlugin] = []
        for entry_point in importlib.metadata.entry_points(group=self.group):
            origin = _distribution(entry_point)
            key = normalize_name(entry_point.name)
            try:
                obj = self._load(entry_point, key, builtins, plugins)
            except Exception as exc:  # any plugin failure is reported, never raised
                failure = BrokenPlugin(self.group, entry_point.name, entry_point.value, origin,
                                       f"{type(exc).__name__}: {exc}")
                broken.append(failure)
                warnings.warn(f"captum_matex skipped the plugin {failure}", PluginWarning,
                              stacklevel=4)
                continue
            plugins[key] = Entry(key, obj, origin)
        self._plugins, self._broken = plugins, broken
        return plugins

    def _load(self, entry_point: importlib.metadata.EntryPoint, key: str,
              builtins: dict[str, T], plugins: dict[str, Entry[T]]) -> T:
        r"""Load one entry point, refusing name clashes and objects of the wrong kind."""
        if key in builtins:
            raise ValueError(f"the name clashes with the built-in {self.kind} {key!r}")
        if key in plugins:
            raise ValueError(f"the name is already taken by the plugin from {plugins[key].origin}")
        obj = entry_point.load()
        problem = self.check(obj)
        if problem:
            raise TypeError(problem)
        return obj

    def reset(self) -> None:
        r"""Forget the loaded plugins; the next lookup reads the entry points again."""
        self._plugins = None
        self._broken = []

    def broken(self) -> list[BrokenPlugin]:
        r"""The skipped entry points of :attr:`group`.

        Returns:
            list of BrokenPlugin: In entry-point order.
        """
        self._plugin_entries()
        return list(self._broken)

    # -- lookups ------------------------------------------------------------------------------

    def entries(self) -> list[Entry[T]]:
        r"""Every valid entry: built-ins and run-time ones in registration order, then plugins.

        Returns:
            list of Entry: Names, objects and origins.
        """
        plugins = self._plugin_entries()
        own = [Entry(name, obj, _origin(obj)) for name, obj in self.table.items()]
        return own + list(plugins.values())

    def objects(self) -> list[T]:
        r"""The registered objects in :meth:`entries` order (adapters are tried in it).

        Returns:
            list: Classes or :class:`MetricInfo`.
        """
        return [entry.obj for entry in self.entries()]

    def available(self) -> list[str]:
        r"""Every valid name, sorted.

        Returns:
            list of str: Names accepted by :meth:`get`.
        """
        return sorted(entry.name for entry in self.entries())

    def get(self, name: str) -> T:
        r"""The object registered under ``name``.

        Args:
            name (str): A name from :meth:`available` (case-insensitive).

        Returns:
            The class or :class:`MetricInfo`.

        Raises:
            KeyError: unknown name (the message lists the available ones) or a
                plugin that was skipped (the message says why).
        """
        table = self._builtins()
        for key in (name, normalize_name(name)):
            if key in table:
                return table[key]
        plugins = self._plugin_entries()
        key = normalize_name(name)
        if key in plugins:
            return plugins[key].obj
        for failure in self._broken:
            if normalize_name(failure.name) == key:
                raise KeyError(f"the {self.kind} plugin {failure}")
        raise KeyError(f"no {self.kind} named {name!r}; available: {', '.join(self.available())}")

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except KeyError:
            return False
        return True


def _check_method(obj: Any) -> str | None:
    if isinstance(obj, type) and issubclass(obj, Attribution):
        return None
    return f"a method must be a captum.attr.Attribution subclass, got {obj!r}"


def _check_metric(obj: Any) -> str | None:
    if isinstance(obj, MetricInfo):
        return None
    return f"a metric must be a captum_matex.registry.MetricInfo, got {type(obj).__name__}"


def _check_adapter(obj: Any) -> str | None:
    if isinstance(obj, type) and callable(getattr(obj, "supports", None)):
        return None
    return f"an adapter must be a class with a supports(model) method, got {obj!r}"


#: Attribution methods (built-ins: :mod:`captum_matex.baselines` and MATEX).
methods: Registry[type[Attribution]] = Registry(
    "method", "captum_matex.methods", "captum_matex.baselines", _check_method)
#: Metrics (built-ins: :data:`captum_matex.metrics.METRICS`).
metrics: Registry[MetricInfo] = Registry(
    "metric", "captum_matex.metrics", "captum_matex.metrics.registry", _check_metric)
#: Model adapters, tried in order (built-ins: ``captum_matex.adapters.ADAPTERS``).
adapters: Registry[type] = Registry(
    "adapter", "captum_matex.adapters", "captum_matex.adapters:ADAPTERS", _check_adapter,
    name_of=lambda cls: cls.family)

_REGISTRIES = (methods, metrics, adapters)


def broken_plugins() -> list[BrokenPlugin]:
    r"""Every skipped entry point of the three groups.

    Returns:
        list of BrokenPlugin: Methods', then metrics', then adapters' failures.
    """
    return [failure for registry in _REGISTRIES for failure in registry.broken()]


def reset_plugins() -> None:
    r"""Forget every loaded plugin and the import system's path caches, so that
    packages installed since (or a ``*.dist-info`` folder put on ``sys.path``)
    are found on the next lookup."""
    importlib.invalidate_caches()
    for registry in _REGISTRIES:
        registry.reset()
