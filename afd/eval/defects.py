"""Which physics clips are drawn cleanly, and what physical consistency each kind scores.

Physical consistency charges a frame with no object 4 px, and a second copy of the object
moves the tracked centroid to whichever copy is heavier, so a clip with a drawing defect scores
near 0 however it moves. Splitting the physics clips by defect tells a model whose motion is off
from one whose drawing is: on the shipped chunk-wise base the clean clips score like the loose
world's own, and the clips with defects carry the whole gap.
"""

from __future__ import annotations

import numpy as np

from afd.eval.score import ClipScore, to_eval_format
from afd.eval.tracker import Track, track
from afd.video.core import Video
from afd.world.grammar import parse_prompt

DEFECTS = ("clean", "duplicated", "missing")


def defect_class(tr: Track) -> str:
    """``"missing"`` if some frame has no object, else ``"duplicated"`` if some frame holds two
    or more significant components (a second copy or a split piece), else ``"clean"``."""
    if not tr.found.all():
        return "missing"
    if (tr.n_objects >= 2).any():
        return "duplicated"
    return "clean"


def physics_defects(videos: list[Video], scores: list[ClipScore]) -> dict[str, dict]:
    """Split the physics clips among ``videos`` (``scores``: their ``evaluate`` scores, same
    order) by ``defect_class``. Returns ``{class: {"n", "fraction" (0-1), "physical_consistency"
    (mean 0-100, None for an empty class)}}`` for every class of ``DEFECTS``."""
    if len(videos) != len(scores):
        raise ValueError(f"got {len(videos)} videos but {len(scores)} scores")
    classes, pcs = [], []
    for i, (v, s) in enumerate(zip(videos, scores)):
        if s.physical_consistency is None:
            continue
        classes.append(defect_class(track(to_eval_format(v, f"clip {i}"), parse_prompt(s.prompt).style)))
        pcs.append(s.physical_consistency)
    classes, pcs = np.array(classes), np.array(pcs)
    out = {}
    for c in DEFECTS:
        sel = classes == c
        out[c] = {"n": int(sel.sum()), "fraction": float(sel.mean()) if len(classes) else 0.0,
                  "physical_consistency": float(pcs[sel].mean()) if sel.any() else None}
    return out


def format_defects(defects: dict[str, dict]) -> str:
    """``physics_defects`` as one line."""
    n = sum(d["n"] for d in defects.values())
    if n == 0:
        return "physics clips by drawing defect: no physics clips"
    parts = []
    for c, d in defects.items():
        pc = "-" if d["physical_consistency"] is None else f"{d['physical_consistency']:.1f}"
        parts.append(f"{c} {d['n']} ({100 * d['fraction']:.0f}%) consistency {pc}")
    return f"physics clips by drawing defect (n={n}): " + " | ".join(parts)
