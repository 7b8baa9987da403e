"""General-group measures on one tracked clip, clip descriptors, and the Fréchet distance."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg

from afd.eval.tracker import Track
from afd.world.grammar import PLAIN, PromptAttrs, grammar
from afd.world.physics import object_radius
from afd.world.render import background_rows

AREA_RANGE = (0.5, 2.0)  # persistence: found area within this ratio of the expected area
SIZE_TOL = 1.5  # size accuracy: median area within this factor of the expected one
MOVE_PX = 2.0  # direction: net displacement that counts as moving (pixels at 32x32)
STILL_PX = 1.0  # ... and below which an object counts as still


def expected_area(attrs: PromptAttrs, size: int, size_word: str | None = None) -> float:
    """Coverage area in px^2 of the prompt's object (optionally with another size word)."""
    r = grammar().sizes[size_word] if size_word else object_radius(attrs)
    R = r * size
    return 4 * R * R if attrs.object == "square" else math.pi * R * R


def _nearest(rgb: np.ndarray, palette: dict) -> str:
    names = list(palette)
    d = [np.linalg.norm(rgb - np.array(palette[n], float)) for n in names]
    return names[int(np.argmin(d))]


def persistence(tr: Track, attrs: PromptAttrs, size: int) -> float:
    """Fraction of frames showing exactly one object of about the right size."""
    exp = expected_area(attrs, size)
    ok = (tr.n_objects == 1) & tr.found & (tr.area >= AREA_RANGE[0] * exp) & (tr.area <= AREA_RANGE[1] * exp)
    return float(ok.mean())


def color_correct(tr: Track, attrs: PromptAttrs) -> bool:
    if not tr.found.any():
        return False
    return _nearest(np.median(tr.color[tr.found], 0), grammar().colors) == attrs.color


def size_correct(tr: Track, attrs: PromptAttrs, size: int) -> bool:
    if not tr.found.any():
        return False
    a = float(np.median(tr.area[tr.found]))
    ratios = {w: abs(math.log(a / expected_area(attrs, size, w))) for w in grammar().sizes}
    best = min(ratios, key=ratios.get)
    return best == attrs.size and ratios[best] <= math.log(SIZE_TOL)


def background_palette(style: str) -> dict[str, np.ndarray]:
    """Each background word's mean colour (RGB 0-255) as ``style`` draws it (the cartoon gradient
    lightens it; its mean over the frame's rows is what ``Track.background`` measures)."""
    palette = {k: np.array(v, float) for k, v in grammar().backgrounds.items()}
    if style == PLAIN:
        return palette
    size = 32
    return {k: background_rows(torch.tensor(v / 255.0), torch.tensor(1.0), size).mean(0).numpy() * 255.0
            for k, v in palette.items()}


def background_correct(tr: Track, attrs: PromptAttrs) -> bool:
    return _nearest(tr.background, background_palette(attrs.style)) == attrs.background


def direction_correct(tr: Track, attrs: PromptAttrs) -> bool:
    """Net displacement between the first and last found frames matches the motion word."""
    idx = np.nonzero(tr.found)[0]
    if len(idx) < 2:
        return False
    dx = tr.cx[idx[-1]] - tr.cx[idx[0]]
    dy = tr.cy[idx[-1]] - tr.cy[idx[0]]
    m = attrs.motion
    if m == "stays still":
        return math.hypot(dx, dy) < STILL_PX
    want = {"left": (-1, 0), "right": (1, 0), "upward": (0, -1), "downward": (0, 1)}[m.split()[-1]]
    along = dx * want[0] + dy * want[1]
    across = abs(dx * want[1] - dy * want[0])
    return along >= MOVE_PX and across <= 0.5 * along


DESCRIPTOR_NAMES = (
    "x_first", "y_first", "x_last", "y_last", "mean_speed", "speed_std", "log_area", "area_cv",
    "r", "g", "b", "bg_r", "bg_g", "bg_b", "found_fraction", "n_objects",
)
# Lower bounds on the per-feature spread used to standardise descriptors, so that a feature that
# is constant in the reference set (e.g. found_fraction = 1) does not blow up the distance.
_SCALE_FLOOR = np.array([1, 1, 1, 1, 0.3, 0.3, 0.1, 0.05, 10, 10, 10, 5, 5, 5, 0.05, 0.05], float)


def descriptor(tr: Track) -> np.ndarray:
    """A 16-d summary of a clip (track, appearance, background); see DESCRIPTOR_NAMES."""
    H = tr.frames.shape[1]
    idx = np.nonzero(tr.found)[0]
    if len(idx) == 0:
        c = H / 2
        return np.array([c, c, c, c, 0, 0, 0, 0, *tr.background, *tr.background, 0, 0], float)
    x, y = tr.cx[idx], tr.cy[idx]
    steps = np.hypot(np.diff(x), np.diff(y)) if len(idx) > 1 else np.zeros(1)
    area = tr.area[idx]
    col = np.median(tr.color[idx], 0)
    return np.array([
        x[0], y[0], x[-1], y[-1], steps.mean(), steps.std(), math.log(area.mean() + 1),
        area.std() / (area.mean() + 1e-9), *col, *tr.background, len(idx) / len(tr.found),
        tr.n_objects.mean(),
    ], float)


def _standardise(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu_ref = b.mean(0)
    scale = np.maximum(b.std(0), _SCALE_FLOOR)
    return (a - mu_ref) / scale, (b - mu_ref) / scale


def frechet_terms(a: np.ndarray, b: np.ndarray) -> dict[str, tuple[float, float]]:
    """Which descriptors the Fréchet distance comes from: per feature of DESCRIPTOR_NAMES,
    (mean term (mu_a - mu_b)^2, spread term (sigma_a - sigma_b)^2), in the same standardised
    units as ``frechet_distance``. They are the diagonal of the full distance: their sum equals
    it when the features are uncorrelated, and otherwise approximates it."""
    za, zb = _standardise(a, b)
    return {n: (float((za[:, i].mean() - zb[:, i].mean()) ** 2), float((za[:, i].std() - zb[:, i].std()) ** 2))
            for i, n in enumerate(DESCRIPTOR_NAMES)}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to descriptor sets a (N, D) and b (M, D),
    both standardised by b's mean and spread (b is the reference). A small ridge keeps
    covariances of few clips well defined."""
    za, zb = _standardise(a, b)
    ridge = 1e-3 * np.eye(a.shape[1])
    ca = (np.cov(za, rowvar=False) if len(za) > 1 else np.zeros((a.shape[1],) * 2)) + ridge
    cb = (np.cov(zb, rowvar=False) if len(zb) > 1 else np.zeros((b.shape[1],) * 2)) + ridge
    covmean = linalg.sqrtm(ca @ cb)
    covmean = np.real(covmean)
    diff = za.mean(0) - zb.mean(0)
    return float(diff @ diff + np.trace(ca + cb - 2 * covmean))
