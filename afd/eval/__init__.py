"""Exact evaluation on the built-in world: tracker, physics and general metrics, reports."""

from afd.lazy import lazy_exports

# Resolved on first use: importing a light submodule (afd.eval.world_judge) must not load the metrics.
__getattr__ = lazy_exports(__name__, {
    "evaluate_folder": "afd.eval.folder", "evaluate": "afd.eval.score", "EVAL_FORMAT": "afd.eval.score",
    "ClipScore": "afd.eval.score", "format_reports": "afd.eval.table", "format_spread": "afd.eval.table",
})

__all__ = ["evaluate", "evaluate_folder", "ClipScore", "EVAL_FORMAT", "format_reports", "format_spread"]
