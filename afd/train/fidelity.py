"""``reward_fidelity``: does the discriminator's weighting follow the true physics?

The Spearman rank correlation, over one iteration's rollouts, between the NFT weights w and the
rollouts' exact physical-consistency scores from the world's evaluator (``afd.eval``). It is
logged only and never feeds training (the trainer stays black-box); only a simulator testbed can
compute it. +1: D ranks rollouts exactly by physics; 0: unrelated; NaN: a constant side.

Alongside it, the same rank agreement with four exact rendering measures (``CUES``): whether the
object is visible, whether it is one object, whether its size holds steady, whether its track is
free of jitter. They say what else D rewards: a discriminator that separates teacher from student
by the student's rendering artefacts has high cue agreement and little ``reward_fidelity``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from afd.eval.score import physical_consistency, to_eval_format
from afd.eval.tracker import track
from afd.video.core import STUDENT, Video
from afd.world.grammar import parse_prompt


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a, b) -> float:
    """Spearman's rho of two equal-length sequences; NaN if either is constant or n < 2."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-D sequences of one length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return math.nan
    ra, rb = rank_average(a), rank_average(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


CUES = ("visible", "single_object", "steady_size", "steady_motion")
# steady_motion of a clip whose object is never seen in 4 consecutive frames (a jerk needs 4).
_NO_MOTION = -10.0


def rollout_measures(clips: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
    """Exact per-clip measures of student-format clips (N, T, 3, H, W) in [-1, 1] whose prompts
    are physics prompts, each (N,): ``physical_consistency`` (0-100, the world's fit) and the
    ``CUES``: ``visible`` (fraction of frames where the object is found, 0-1), ``single_object``
    (fraction of frames with exactly one object, 0-1), ``steady_size`` (minus the coefficient of
    variation of its area over the found frames, <= 0), ``steady_motion`` (minus the median size
    of the centroid's third difference in px/frame^3, <= 0: ballistic flight and rolling have
    none, a bounce adds one or two large values the median ignores, and a track that jumps
    between frames - e.g. at a student's block boundaries - has many)."""
    if clips.shape[0] != len(prompts):
        raise ValueError(f"{clips.shape[0]} clips but {len(prompts)} prompts")
    tracks = [track(to_eval_format(Video(c.float().clamp(-1, 1), STUDENT.fps))) for c in clips]
    pc, _ = physical_consistency(tracks, [parse_prompt(p) for p in prompts])
    steady = []
    for t in tracks:
        area = t.area[t.found]
        steady.append(-float(area.std() / area.mean()) if len(area) and area.mean() > 0 else -1.0)
    return {
        "physical_consistency": pc,
        "steady_motion": np.array([_steady_motion(t) for t in tracks]),
        "visible": np.array([t.found.mean() for t in tracks], float),
        "single_object": np.array([(t.n_objects == 1).mean() for t in tracks], float),
        "steady_size": np.array(steady),
    }


def _steady_motion(t) -> float:
    jerks = []
    for run in np.split(np.arange(len(t.found)), np.nonzero(~t.found)[0]):
        run = run[t.found[run]]
        if len(run) >= 4:
            d3 = np.diff(np.stack([t.cx[run], t.cy[run]], 1), n=3, axis=0)
            jerks.append(np.hypot(d3[:, 0], d3[:, 1]))
    return -float(np.median(np.concatenate(jerks))) if jerks else _NO_MOTION
