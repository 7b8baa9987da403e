"""The one registry of adaptation methods, torch-free (reading a config never imports torch).

A method is two modules in ``afd/methods/``: ``<name>.py`` holds its class (a
``afd.methods.base.Method``) and ``<name>_config.py`` its config dataclass and one ``register``
call. Every ``*_config`` module here is imported on first use of the registry, so a new method
needs no edit anywhere else: ``train.method`` accepts its name, ``afd train`` builds it, the run's
config gains its section, and ``afd reproduce`` can list it (docs/training.md, "Adding a method").
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MethodSpec:
    """name: what ``train.method`` says; cls: ``"module:Class"`` of the method; section: the
    config section (an ``AdaptConfig`` attribute) holding ``config``, or None when the method
    reads another's (the oracle reads ``afd``); reference: a diagnostic row that reports read gains
    against, not a baseline; order: where reports list it (ascending)."""

    name: str
    cls: str
    config: type | None = None
    section: str | None = None
    reads: str | None = None
    reference: bool = False
    order: int = 100


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (called by its ``<name>_config`` module at import)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"method {spec.name!r} is registered twice")
    if (spec.config is None) != (spec.section is None):
        raise ValueError(f"method {spec.name!r}: give both a config class and its section, or neither")
    if spec.reads is not None and spec.section is not None:
        raise ValueError(f"method {spec.name!r}: a method reads another's section only when it has none of its own")
    _REGISTRY[spec.name] = spec
    return spec


def methods() -> dict[str, MethodSpec]:
    """Every registered method, in report order."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if info.name.endswith("_config"):
                importlib.import_module(f"{__package__}.{info.name}")
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def method_names() -> tuple[str, ...]:
    return tuple(methods())


def config_sections() -> dict[str, type]:
    """Config section name -> dataclass, for every method with a config of its own."""
    return {s.section: s.config for s in methods().values() if s.section is not None}


def section_users(section: str) -> tuple[str, ...]:
    """The methods whose settings are config section ``section``: its own method and those that
    read it (``section_users("afd")``: the methods whose student update is ``afd.update``)."""
    return tuple(n for n, s in methods().items() if section in (s.section, s.reads))


def reference_methods() -> tuple[str, ...]:
    return tuple(n for n, s in methods().items() if s.reference)


def method_class(name: str) -> type:
    """The ``afd.methods.base.Method`` subclass registered as ``name``."""
    specs = methods()
    if name not in specs:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(specs)}")
    module, cls = specs[name].cls.split(":")
    return getattr(importlib.import_module(module), cls)
