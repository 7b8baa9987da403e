"""Where a block-wise student loses the track: motion inside blocks vs across block boundaries.

Two measurements on general prompts whose object moves at constant velocity (every motion word
but "stays still"), tracked by the exact tracker:

* **teacher-forced drift**: the student continues a world clip (the pretraining world, same
  prompt and seed) from the opening blocks ``0 .. k-1`` and generates block k; each generated
  frame's centroid is compared with the world's at that frame, along the direction of motion
  (+ = ahead of the world). A model that cannot tell the frames of a block apart pulls them
  toward the block's middle: the first frame ahead, the last behind.
* **free-rollout steps**: in the student's own clips, the mean frame-to-frame step inside blocks
  and across block boundaries (the world's are equal: constant speed). A boundary step much
  larger than the inner one is the jitter that dominates the Fréchet distance's speed_std term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from afd.eval.tracker import track
from afd.student.base import StudentModel
from afd.student.sample import generate
from afd.video.core import STUDENT, Video, stack
from afd.world.grammar import PLAIN, parse_prompt
from afd.world.sample import sample_world


@dataclass
class BlockDrift:
    """drift: (n_clips, K - 1, F) signed along-motion error in px of each generated frame of
    blocks 1..K-1 (NaN where the object is not found); inner_step / boundary_step: mean step in
    px between consecutive frames of the same block / across a block boundary, for the student's
    free rollouts and for the world's clips of the same prompts and seeds (NaN for F = 1: no
    inner steps)."""

    drift: np.ndarray
    inner_step: float
    boundary_step: float
    world_inner_step: float
    world_boundary_step: float
    n_clips: int


def moving_prompts(prompts: list[str]) -> list[str]:
    """The general-domain prompts among ``prompts`` whose object moves (constant velocity)."""
    out = []
    for p in prompts:
        a = parse_prompt(p)
        if a.domain == "general" and a.motion != "stays still":
            out.append(p)
    return out


def _centroids(video: Video, style: str = PLAIN) -> np.ndarray:
    tr = track(video, style)
    return np.stack([tr.cx, tr.cy], 1)  # (T, 2), NaN where not found


def _steps(xy: np.ndarray, block_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Step lengths inside blocks and across boundaries of one track (T, 2)."""
    d = np.hypot(*np.diff(xy, axis=0).T)
    boundary = (np.arange(1, len(xy)) % block_frames) == 0
    return d[~boundary], d[boundary]


def _nanmean(chunks: list[np.ndarray]) -> float:
    v = np.concatenate(chunks) if chunks else np.zeros(0)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def block_drift(model: StudentModel, prompts: list[str], seed: int = 1000) -> BlockDrift:
    """Measure ``model`` on the moving general prompts among ``prompts`` (one clip each, seed
    ``seed``). Raises ValueError if there is none."""
    moving = moving_prompts(prompts)
    if not moving:
        raise ValueError("block drift needs general prompts with a moving object (e.g. --split general-eval)")
    cfg = model.config
    F, K = cfg.block_frames, cfg.n_blocks
    if (cfg.frames, cfg.pixel_size) != (STUDENT.frames, STUDENT.height):
        raise ValueError(f"block drift compares with the world at {STUDENT.frames}x{STUDENT.height}x{STUDENT.width}; "
                         f"the model's clips are {cfg.frames}x{cfg.pixel_size}x{cfg.pixel_size}")
    seeds = [seed] * len(moving)
    world = stack([c.video for c in sample_world(moving, seeds, "loose", STUDENT)])
    styles = [parse_prompt(p).style for p in moving]
    world_xy = [_centroids(Video(v, STUDENT.fps), s) for v, s in zip(world, styles)]
    drift = np.full((len(moving), K - 1, F), np.nan)
    for k in range(1, K):
        clips = generate(model, moving, seeds, prefix=world[:, :k * F], n_blocks=k + 1)
        for i, v in enumerate(clips):
            xy = _centroids(Video(v, STUDENT.fps), styles[i])
            for j in range(k * F, (k + 1) * F):
                true_v = world_xy[i][j] - world_xy[i][j - 1]
                n = np.hypot(*true_v)
                if n > 1e-6:
                    drift[i, k - 1, j - k * F] = float((xy[j] - world_xy[i][j]) @ (true_v / n))
    free = generate(model, moving, seeds)
    inner, bound, w_inner, w_bound = [], [], [], []
    for v, wxy, style in zip(free, world_xy, styles):
        a, b = _steps(_centroids(Video(v, STUDENT.fps), style), F)
        inner.append(a)
        bound.append(b)
        a, b = _steps(wxy, F)
        w_inner.append(a)
        w_bound.append(b)
    return BlockDrift(drift, _nanmean(inner), _nanmean(bound), _nanmean(w_inner), _nanmean(w_bound), len(moving))


def format_block_drift(r: BlockDrift) -> str:
    F = r.drift.shape[2]
    signed = np.nanmean(r.drift, axis=(0, 1))
    absolute = np.nanmean(np.abs(r.drift), axis=(0, 1))
    head = "frame of block".ljust(18) + "".join(f"{j:>8d}" for j in range(F))
    lines = [
        f"block drift ({r.n_clips} moving general clips): teacher-forced position error along the motion, "
        "px (+ = ahead of the world)",
        head,
        "mean signed".ljust(18) + "".join(f"{x:>+8.2f}" for x in signed),
        "mean |error|".ljust(18) + "".join(f"{x:>8.2f}" for x in absolute),
        f"free rollout, mean step: {r.inner_step:.2f} px inside blocks, {r.boundary_step:.2f} px across "
        f"block boundaries (world: {r.world_inner_step:.2f} / {r.world_boundary_step:.2f})",
    ]
    return "\n".join(lines)
