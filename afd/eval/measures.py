"""Exact per-clip measures of world clips: the world judge's score and its rendering cues.

``physical_consistency`` is the world's physics fit of a clip to its prompt (0-100); the four
``CUES`` say whether the object is visible, is one object, keeps its size and moves without
jitter. The world judge (``afd.train.judge``) logs the rank agreement of a method's weights with
each (``afd.train.fidelity``), and the oracle method trains on the first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from afd.eval.score import EVAL_FORMAT, physical_consistency
from afd.eval.tracker import track
from afd.video.core import STUDENT, Video, resample
from afd.world.grammar import parse_prompt

CUES = ("visible", "single_object", "steady_size", "steady_motion")
# steady_motion of a clip whose object is never seen in 4 consecutive frames (a jerk needs 4).
_NO_MOTION = -10.0


def rollout_measures(clips: torch.Tensor, prompts: list[str], fps: float = STUDENT.fps) -> dict[str, np.ndarray]:
    """Exact per-clip measures of student-format clips (N, T, 3, H, W) in [-1, 1] whose prompts
    are physics prompts, each (N,): ``physical_consistency`` (0-100, the world's fit) and the
    ``CUES``: ``visible`` (fraction of frames where the object is found, 0-1), ``single_object``
    (fraction of frames with exactly one object, 0-1), ``steady_size`` (minus the coefficient of
    variation of its area over the found frames, <= 0), ``steady_motion`` (minus the median size
    of the centroid's third difference in px/frame^3, <= 0: ballistic flight and rolling have
    none, a bounce adds one or two large values the median ignores, and a track that jumps
    between frames - e.g. at a student's block boundaries - has many). ``fps``: the clips' rate
    (the built-in students' 8 by default); they are resampled by timestamp to the eval format's
    size and rate, keeping their duration: a streamed clip longer than 2 s is measured whole
    (one physics fit over all its frames)."""
    if clips.shape[0] != len(prompts):
        raise ValueError(f"{clips.shape[0]} clips but {len(prompts)} prompts")
    n = int(round(clips.shape[1] / fps * EVAL_FORMAT.fps)) if len(clips) else EVAL_FORMAT.frames
    fmt = EVAL_FORMAT if n <= EVAL_FORMAT.frames else replace(EVAL_FORMAT, frames=n)
    attrs = [parse_prompt(p) for p in prompts]
    tracks = [track(resample(Video(c.float().clamp(-1, 1), fps), fmt), a.style) for c, a in zip(clips, attrs)]
    pc, _ = physical_consistency(tracks, attrs)
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
