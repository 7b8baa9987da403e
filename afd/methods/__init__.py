"""Adaptation methods (AFD and the baselines) and the pieces they share.

``METHODS`` is the one registry: ``train.method`` is typed by ``MethodName`` and the trainer
builds the method with ``method_class``. Classes are imported on first use so that reading a
config never pulls in the methods' dependencies.
"""

from __future__ import annotations

import importlib
from typing import Literal, get_args

# "oracle" (afd.methods.oracle) is a diagnostic: AFD weighted by a judge's exact score instead of D.
MethodName = Literal["afd", "sft", "gan", "dmd", "oracle"]

METHODS: dict[str, str] = {
    "afd": "afd.methods.afd:AFD",
    "sft": "afd.methods.sft:SFT",
    "gan": "afd.methods.gan:GAN",
    "dmd": "afd.methods.dmd:DMD",
    "oracle": "afd.methods.oracle:OracleAFD",
}
if set(METHODS) != set(get_args(MethodName)):  # the two lists are one registry: keep them equal
    raise ImportError(f"afd.methods: METHODS {sorted(METHODS)} and MethodName {get_args(MethodName)} differ")


def method_class(name: str) -> type:
    """The ``afd.methods.base.Method`` subclass registered as ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)
