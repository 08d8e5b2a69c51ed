"""Building the plugin manager and the typed view the rest of the core uses.

``build_plugins()`` is the one place plugins are discovered: hookspecs, then every
entry point of the ``harness.plugins`` group (each loaded in its own try, so a broken
plugin is reported by name and the others still load), then ``check_pending()``, then
one call of each registration hook per plugin so every class is traced to the package
that provided it. Nothing outside this module touches pluggy.
"""

from __future__ import annotations

import importlib.metadata as md
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .api import DatasetSource, Decoder, Engine, Executor, Metric, ModelAdapter, Option, Plugin, RatingFormat, Reporter, _set_plugin_source
from .errors import UserError, unknown_name

ENTRY_POINT_GROUP = "harness.plugins"

#: kind -> (hook name, required base class)
KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "model": ("harness_register_models", ModelAdapter),
    "decoder": ("harness_register_decoders", Decoder),
    "metric": ("harness_register_metrics", Metric),
    "engine": ("harness_register_engines", Engine),
    "dataset": ("harness_register_datasets", DatasetSource),
    "reporter": ("harness_register_reporters", Reporter),
    "rating_format": ("harness_register_rating_formats", RatingFormat),
    "executor": ("harness_register_executors", Executor),
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    kind: str
    cls: type[Plugin]
    package: str
    version: str
    source: str  # entry point or module that registered it

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "plugin_version": self.cls.version,
            "source": self.source,
            "description": self.cls.description,
        }


@dataclass(frozen=True)
class PluginFailure:
    name: str
    package: str
    version: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "failed", "package": self.package, "version": self.version, "error": self.error}


@dataclass
class Plugins:
    """Every registered plugin class, by kind and name, and the plugins that failed to load."""

    by_kind: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[PluginFailure] = field(default_factory=list)

    def names(self, kind: str) -> list[str]:
        return sorted(self.by_kind[kind])

    def info(self, kind: str, name: str, *, file: str | None = None, key: str | None = None) -> PluginInfo:
        found = self.by_kind[kind].get(name)
        if found is None:
            hint = ""
            broken = [f for f in self.failures if f.name == name]
            if broken:
                hint = f" (the plugin '{name}' failed to load: {broken[0].error})"
            raise UserError(unknown_name(f"{kind} plugin", name, self.by_kind[kind]) + hint, file=file, key=key)
        return found

    def create(self, kind: str, name: str, settings: dict[str, Any] | None = None) -> Any:
        return self.info(kind, name).cls(settings)

    def default(self, kind: str) -> str:
        """The plugin of ``kind`` that declares itself the default (``is_default = True``), when exactly one does."""
        found = sorted(n for n, i in self.by_kind[kind].items() if i.cls.is_default)
        if len(found) == 1:
            return found[0]
        installed = ", ".join(self.names(kind)) or "none are installed"
        if not found:
            raise UserError(f"no {kind} plugin declares itself the default; name one (installed: {installed})")
        raise UserError(f"several {kind} plugins declare themselves the default ({', '.join(found)}); name one")

    def all(self) -> list[PluginInfo]:
        return [info for kind in KINDS for info in sorted(self.by_kind[kind].values(), key=lambda i: i.name)]


_CURRENT: Plugins | None = None


def use_plugins(plugins: Plugins | None) -> None:
    """Make ``plugins`` the ones :func:`current_plugins` returns in this process (a run sets its own; tests set fakes)."""
    global _CURRENT
    _CURRENT = plugins


def current_plugins() -> Plugins:
    """The plugins of this process: those set with :func:`use_plugins`, else the installed entry points (built once)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = build_plugins()
    return _CURRENT


_set_plugin_source(current_plugins)


def build_plugins(*, entry_points: bool = True, extra: Iterable[object] = ()) -> Plugins:
    """Discover plugins. ``extra`` are plugin objects (modules or instances) registered directly, as tests do."""
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    failures: list[PluginFailure] = []
    origin: dict[str, tuple[str, str, str]] = {}  # plugin name -> (package, version, source)

    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            package, version = _dist_of(ep)
            try:
                obj = ep.load()
                pm.register(obj, name=ep.name)
                origin[ep.name] = (package, version, ep.value)
            except Exception as exc:  # a broken plugin must not stop the others
                failures.append(PluginFailure(ep.name, package, version, _short_error(exc)))

    for obj in extra:
        name = pm.register(obj)
        if name is not None:
            module = getattr(obj, "__name__", type(obj).__module__)
            origin[name] = ("(registered directly)", "", module)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        failures.append(PluginFailure(getattr(exc.plugin, "__name__", str(exc.plugin)), "", "", str(exc)))
        pm.unregister(exc.plugin)

    plugins = Plugins(failures=failures)
    for kind, (hook_name, base) in KINDS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            package, version, source = origin.get(impl.plugin_name, ("", "", impl.plugin_name))

            def register(cls: type, _kind=kind, _base=base, _pkg=package, _ver=version, _src=source) -> None:
                _check_class(cls, _kind, _base)
                existing = plugins.by_kind[_kind].get(cls.name)
                if existing is not None and existing.cls is not cls:
                    raise TypeError(f"{_kind} '{cls.name}' is already registered by {existing.package or existing.source}")
                plugins.by_kind[_kind][cls.name] = PluginInfo(cls.name, _kind, cls, _pkg, _ver, _src)

            try:
                impl.function(register=register)
            except Exception as exc:
                failures.append(PluginFailure(impl.plugin_name, package, version, _short_error(exc)))
    return plugins


def _check_class(cls: type, kind: str, base: type[Plugin]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{cls!r} registered as a {kind} plugin must subclass harness.api.{base.__name__}")
    if not cls.name or not isinstance(cls.name, str):
        raise TypeError(f"{cls.__qualname__} has no 'name'")
    for opt_name, opt in {**cls.options, **getattr(cls, "params", {})}.items():
        if not isinstance(opt, Option):
            raise TypeError(f"{cls.__qualname__}.options['{opt_name}'] must be a harness.api.Option")


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    return dist.metadata["Name"], dist.version


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
