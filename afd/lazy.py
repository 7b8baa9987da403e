"""Package attributes imported on first use (PEP 562), so that importing a light submodule (a
constant, an error type) does not pull torch in through its package's ``__init__``. The CLI
builds its parser from such submodules and must answer ``--help`` without loading torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that resolves ``name`` by importing the module
    ``exports[name]`` (a dotted module path) and taking its attribute of the same name."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Cache it on the package: later lookups are ordinary attribute reads.
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
