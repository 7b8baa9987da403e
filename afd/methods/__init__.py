"""Adaptation methods (AFD and the baselines) and the pieces they share.

The registry (``afd.methods.registry``) is the one list of methods: each registers itself from its
torch-free ``<name>_config`` module. ``MethodName`` (the type of ``train.method``) is derived from
it, and the trainer builds a method with ``method_class``. Classes are imported on first use so
that reading a config never pulls in the methods' dependencies.
"""

from __future__ import annotations

from typing import Literal

from afd.methods.registry import method_class, method_names

MethodName = Literal[method_names()]  # type: ignore[valid-type]  # the registered names, e.g. "afd"

__all__ = ["MethodName", "method_class", "method_names"]
