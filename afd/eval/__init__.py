"""Exact evaluation on the built-in world: tracker, physics and general metrics, reports."""

from afd.eval.folder import evaluate_folder
from afd.eval.score import EVAL_FORMAT, ClipScore, evaluate
from afd.eval.table import format_reports, format_spread

__all__ = ["evaluate", "evaluate_folder", "ClipScore", "EVAL_FORMAT", "format_reports", "format_spread"]
