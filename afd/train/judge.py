"""Judges: optional exact scorers of clips, used only for logging, evaluation and the oracle.

A run against a real teacher has no judge (``eval.judge=none``): it trains, logs, checkpoints
and resumes, with no evaluation. The built-in world is one judge (``eval.judge=world``): it
measures every rollout against its prompt's ground truth and evaluates a student on the world's
eval splits. The trainer reaches a judge only through this interface, and only through loop
callbacks (``afd.train.callbacks``) and the oracle method, never for the methods' training signal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

JudgeName = Literal["world", "none"]


class Judge(Protocol):
    """What the trainer may ask of a judge."""

    score: str  # the key of ``measure``'s main per-clip score (higher is better)
    cues: tuple[str, ...]  # further per-clip measures whose rank agreement is logged
    clip_fps: float  # the frame rate of the clips ``measure`` gets (the trainer sets the student's)

    def use_splits(self, splits: tuple[str, ...]) -> None:
        """Make ``evaluate`` sample these splits (``eval.splits``); ValueError naming a bad one."""

    def check_prompts(self, prompts: list[str], where: str) -> None:
        """Raise ValueError (naming ``where``) if the judge cannot score these prompts."""

    def measure(self, clips: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
        """clips (N, T, 3, H, W) in [-1, 1] with their N prompts -> {name: (N,)}: ``score`` and ``cues``."""

    def evaluate(self, model, per_prompt: int, seed: int, prompts_per_split: int | None = None,
                 progress: bool = False) -> dict:
        """Sample ``model`` on the judge's eval prompts and score: a report (``afd eval`` schema)."""

    def summarize(self, model, prompts_per_split: int, per_prompt: int, seed: int) -> dict[str, float]:
        """A small eval subset's few headline numbers, for the training log."""

    def describe(self) -> str:
        """Which prompts ``evaluate`` uses, for printed tables."""

    def tables(self, reports: dict[str, dict]) -> str:
        """Reports keyed by column name as a printed table, with change lines when a "base" is given."""


# ``eval.judge`` -> "module:Class" of a judge built without arguments (None: no judge). Named by
# module path, like a student format: the trainer never imports the testbed that implements one.
JUDGES: dict[str, str | None] = {
    "world": "afd.eval.world_judge:WorldJudge",  # the built-in world's exact evaluator
    "none": None,
}


def make_judge(name: str) -> Judge | None:
    """The judge called ``name`` (``eval.judge``): "world" or "none" (None)."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; expected one of: {', '.join(JUDGES)}")
    if JUDGES[name] is None:
        return None
    module, cls = JUDGES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
