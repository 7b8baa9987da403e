"""Physics measures on one tracked clip: floor bounces and the gravity seen in free flight.

Units: pixels at the evaluation size and seconds. Expected values come from the real world's
constants and the prompt (floor height from the object's size) — never from a clip's record.
"""

from __future__ import annotations

import numpy as np

from afd.eval.tracker import Track
from afd.world.grammar import PromptAttrs
from afd.world.physics import REAL, object_radius

BOUNCING_MOTIONS = ("falls", "is thrown to the left", "is thrown to the right", "is tossed upward")
KINK_PX = 0.5  # free flight has y[k+1] - 2 y[k] + y[k-1] = g / fps^2 >= 0; a rebound makes it < -KINK_PX
FLOOR_TOL_PX = 5.0  # a rebound must happen this close to the floor (contact falls between frames)
MIN_RISE_PX = 0.3  # ... and the object must rise at least this much in the two frames after it
REST_PX = 0.2  # per-frame vertical motion below this, on the floor, is resting/rolling


def expects_bounce(attrs: PromptAttrs) -> bool:
    """Whether the real world bounces this prompt's ball on the floor within a clip."""
    return attrs.motion in BOUNCING_MOTIONS


def _floor_px(attrs: PromptAttrs, size: int) -> float:
    return (1.0 - object_radius(attrs)) * size


def _kinks(y: np.ndarray, ok: np.ndarray, floor: float) -> np.ndarray:
    """(T,) bool: frame k sits in a triple (k-1, k, k+1) that contains a floor contact."""
    T = len(y)
    out = np.zeros(T, bool)
    for k in range(1, T - 1):
        if ok[k - 1] and ok[k] and ok[k + 1]:
            d2 = y[k + 1] - 2 * y[k] + y[k - 1]
            out[k] = d2 < -KINK_PX and max(y[k - 1], y[k], y[k + 1]) >= floor - FLOOR_TOL_PX
    return out


def floor_bounce_frames(tr: Track, attrs: PromptAttrs, size: int) -> list[int]:
    """Frames of floor rebounds: each run of kink frames whose lowest point is followed, within
    two frames, by a rise of at least MIN_RISE_PX (a ball that lands and stops is no bounce)."""
    y, ok = tr.cy, tr.found
    kink = _kinks(y, ok, _floor_px(attrs, size))
    out, k, T = [], 0, len(y)
    while k < T:
        if not kink[k]:
            k += 1
            continue
        j = k
        while j + 1 < T and kink[j + 1]:
            j += 1
        window = range(k - 1, j + 2)
        low = max(window, key=lambda i: y[i])  # the lowest point (largest y) around the contact
        after = [y[i] for i in range(low + 1, min(T, low + 3)) if ok[i]]
        if after and min(after) < y[low] - MIN_RISE_PX:
            out.append(low)
        k = j + 1
    return out


def gravity_estimate(tr: Track, attrs: PromptAttrs, size: int, fps: float) -> float | None:
    """Vertical acceleration (px/s^2) fitted jointly over free-flight segments: runs of
    consecutive found frames cut at floor contacts (kink frames) and without resting frames,
    each segment with its own offset and velocity and one shared acceleration. None when no
    segment has three frames."""
    y, ok = tr.cy, tr.found
    floor = _floor_px(attrs, size)
    T = len(y)
    cut = _kinks(y, ok, floor)
    for k in range(T):  # resting on the floor is not free flight
        if ok[k] and y[k] >= floor - 0.5:
            nb = [abs(y[j] - y[k]) for j in (k - 1, k + 1) if 0 <= j < T and ok[j]]
            if nb and max(nb) < REST_PX:
                cut[k] = True
    segments, cur = [], []
    for k in range(T):
        if ok[k] and not cut[k]:
            cur.append(k)
        else:
            if len(cur) >= 3:
                segments.append(cur)
            cur = []
    if len(cur) >= 3:
        segments.append(cur)
    if not segments:
        return None
    rows, rhs = [], []
    S = len(segments)
    for s, seg in enumerate(segments):
        for k in seg:
            t = k / fps
            row = np.zeros(2 * S + 1)
            row[2 * s], row[2 * s + 1], row[-1] = 1.0, t, 0.5 * t * t
            rows.append(row)
            rhs.append(y[k])
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return float(sol[-1])


def gravity_error(tr: Track, attrs: PromptAttrs, size: int, fps: float) -> float:
    """|g_est - g| / g, capped at 1 (also 1 when no free flight is visible)."""
    g_true = REAL.g * size
    est = gravity_estimate(tr, attrs, size, fps)
    if est is None:
        return 1.0
    return float(min(1.0, abs(est - g_true) / g_true))
