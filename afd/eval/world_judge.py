"""The built-in world as a judge: exact physics and rendering measures, and its eval splits."""

from __future__ import annotations

import numpy as np
import torch

from afd.eval.compare import HEADLINE, change_lines
from afd.eval.measures import CUES, rollout_measures
from afd.eval.student import EVAL_SPLITS, eval_prompts, evaluate_student, sample_and_score
from afd.eval.table import format_reports
from afd.video.core import STUDENT
from afd.world.grammar import PromptError, parse_prompt
from afd.world.splits import load_split


class WorldJudge:
    """Scores clips of world-grammar prompts against their exact ground truth."""

    score = "physical_consistency"
    cues = CUES
    # The rate of the clips ``measure`` is given (they carry none): the built-in students' by
    # default; a student decoding at another rate (a Wan student's ``fps``) needs its own here.
    # ``evaluate`` and ``summarize`` read the rate from the model they sample.
    clip_fps: float = STUDENT.fps
    # Which splits ``evaluate`` samples (``use_splits``: the trainer passes ``eval.splits``).
    splits: tuple[str, ...] = EVAL_SPLITS

    def check_prompts(self, prompts: list[str], where: str) -> None:
        for p in prompts:
            try:
                parse_prompt(p)
            except PromptError as e:
                raise ValueError(f"{where}: the world judge (eval.judge=world) scores world-grammar prompts only, "
                                 f"and {e}; for your own prompts set eval.judge=none") from None

    def use_splits(self, splits: tuple[str, ...]) -> None:
        for name in splits:
            try:
                load_split(name)
            except ValueError as e:
                raise ValueError(f"eval.splits: {e}") from None
        if not splits:
            raise ValueError("eval.splits must name at least one split")
        self.splits = tuple(splits)

    def measure(self, clips: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
        return rollout_measures(clips.detach().cpu(), prompts, self.clip_fps)  # the tracker works on CPU arrays

    def evaluate(self, model, per_prompt: int, seed: int, prompts_per_split: int | None = None,
                 progress: bool = False) -> dict:
        report, _, _, _ = sample_and_score(model, eval_prompts(prompts_per_split, self.splits), per_prompt, seed,
                                           progress=progress)
        return report

    def summarize(self, model, prompts_per_split: int, per_prompt: int, seed: int) -> dict[str, float]:
        return evaluate_student(model, prompts_per_split, per_prompt, seed)

    def describe(self) -> str:
        return ", ".join(self.splits)

    def tables(self, reports: dict[str, dict]) -> str:
        text = format_reports(reports)
        names = list(reports)
        if "base" in reports and len(names) > 1:
            text += "\n" + "\n".join(change_lines(reports["base"], reports[names[-1]], HEADLINE, ("base", names[-1])))
        return text
