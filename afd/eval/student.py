"""Evaluate a student model in memory: sample prompts of the eval splits, score with the exact metrics.

Kept apart from training (DiT style): the pretraining and adaptation loops call these, and so can
anyone holding a ``StudentModel``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from afd.eval.score import ClipScore, evaluate
from afd.progress import PhaseProgress
from afd.student.base import StudentModel
from afd.student.sample import generate
from afd.video.core import STUDENT, Video
from afd.video.strip import save_strip
from afd.world.grammar import with_style
from afd.world.sample import sample_world
from afd.world.splits import load_split

EVAL_SPLITS = ("physics-eval", "general-eval")


def eval_prompts(prompts_per_split: int | None, splits: tuple[str, ...] | list[str] = EVAL_SPLITS) -> list[str]:
    """Prompts spread evenly over ``splits`` (default physics-eval and general-eval); None: all."""
    out = []
    for split in splits:
        prompts = load_split(split)
        if prompts_per_split is None or prompts_per_split >= len(prompts):
            out += prompts
            continue
        idx = np.linspace(0, len(prompts) - 1, prompts_per_split).round().astype(int)
        out += [prompts[i] for i in idx]
    return out


def sample_and_score(model: StudentModel, prompts: list[str], per_prompt: int, seed: int,
                     progress: bool = False, name: str = "eval", frames: int | None = None,
                     score_style: str | None = None) -> tuple[dict, list[ClipScore], list[Video], list[str]]:
    """Sample ``per_prompt`` clips per prompt (seeds seed .. seed + per_prompt - 1) and score them.
    ``frames``: the clips' length (default the model's); longer than the judge's 2 seconds, the
    student streams and the clips are scored per window (``afd.eval.horizon``).

    ``progress``: print a line with the estimated time and show a bar (stderr) while sampling and
    scoring, each phase named ``name``; off by default, so library callers stay quiet.
    ``score_style``: score each clip as if its prompt named this style (``restyle``).
    Returns (report in the ``afd eval`` JSON schema, per-clip scores, the clips, their prompts)."""
    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + k % per_prompt for k in range(len(all_prompts))]
    seeds_each = f"{per_prompt} seed{'s' if per_prompt > 1 else ''} each"
    # The clips' own rate: the judge resamples them by timestamp to its format (a Wan student's
    # decoded clips need not be the built-in students' 16 frames at 8 fps).
    fps = model.config.video_format().fps
    with PhaseProgress(len(all_prompts), f"{name}: sample", progress,
                       detail=f"({len(prompts)} prompts, {seeds_each})") as bar:
        clips = [Video(v, fps) for v in generate(model, all_prompts, seeds, frames=frames, progress=bar.update)]
    report, scores = score_clips(clips, restyle(all_prompts, score_style), progress, name)
    return report, scores, clips, all_prompts


def restyle(prompts: list[str], style: str | None) -> list[str]:
    """The prompts as if they named ``style`` (None: as they are). Scoring a clip against its prompt
    in another style reads its motion under the look it drew: with the physics and general measures
    taken under both looks, a student that drew the wrong look is told apart from one that drew the
    wrong motion (docs/style.md)."""
    return list(prompts) if style is None else [with_style(p, style) for p in prompts]


def score_clips(clips: list[Video], prompts: list[str], progress: bool = False, name: str = "eval"
          ) -> tuple[dict, list[ClipScore]]:
    """``evaluate`` with the optional bar and estimate line of ``sample_and_score``; clips longer
    than the judge's 2 seconds go to ``horizon_evaluate`` (a report with a ``horizon`` entry)."""
    from afd.eval.horizon import horizon_evaluate, windows_of

    n_windows = windows_of(clips[0]) if clips and len(clips[0].frames) > STUDENT.frames else 1
    with PhaseProgress(len(clips) * n_windows, f"{name}: score", progress) as bar:
        if n_windows > 1:
            return horizon_evaluate(clips, prompts, progress=bar.update)
        return evaluate(clips, prompts, progress=bar.update)


def sample_world_and_score(mode: str, prompts: list[str], per_prompt: int, seed: int, progress: bool = False,
                           frames: int | None = None, score_style: str | None = None
                           ) -> tuple[dict, list[ClipScore], list[Video], list[str]]:
    """The reference rows: the world itself (``real`` = the teacher, ``loose`` = what the base was
    shown) sampled at the student's format for the same prompts and seeds as ``sample_and_score``
    uses, so its report sits in the same table. ``frames``: the clips' length (default the
    student format's 16; the world simulates any length). Returns the same tuple; ``progress``
    as there."""
    from dataclasses import replace

    all_prompts = [p for p in prompts for _ in range(per_prompt)]
    seeds = [seed + k % per_prompt for k in range(len(all_prompts))]
    fmt = replace(STUDENT, frames=frames) if frames else STUDENT
    clips = [c.video for c in sample_world(all_prompts, seeds, mode, fmt)]
    report, scores = score_clips(clips, restyle(all_prompts, score_style), progress, f"world:{mode}")
    return report, scores, clips, all_prompts


def summarize(report: dict, scores: list[ClipScore]) -> dict:
    """The few numbers a training log tracks: physics/general totals and the PC mean and spread."""
    groups = report["groups"]
    pcs = [s.physical_consistency for s in scores if s.physical_consistency is not None]
    return {
        "physics_total": groups["physics"]["total"] if groups["physics"] else float("nan"),
        "general_total": groups["general"]["total"] if groups["general"] else float("nan"),
        "physical_consistency": float(np.mean(pcs)) if pcs else float("nan"),
        "pc_std": float(np.std(pcs)) if pcs else float("nan"),
    }


def evaluate_student(model: StudentModel, prompts_per_split: int, per_prompt: int, seed: int,
                     strip_path: Path | None = None, strip_clips: int = 6, progress: bool = False) -> dict:
    """Sample the eval subset, score it; optionally write a strip of ``strip_clips`` clips.
    ``progress``: as in ``sample_and_score`` (off: nothing printed)."""
    report, scores, clips, prompts = sample_and_score(model, eval_prompts(prompts_per_split), per_prompt, seed,
                                                      progress=progress)
    if strip_path is not None and strip_clips:
        pick = np.linspace(0, len(clips) - 1, min(strip_clips, len(clips))).round().astype(int)
        save_strip(strip_path, [clips[i] for i in pick], [prompts[i] for i in pick], n_frames=16, cell=48)
    return summarize(report, scores)
