"""Pixel tracker: background from the border, the object as the connected components far from it.

Works on clips in the evaluation format (32x32). Because world frames blend object and background
linearly with the pixel's coverage, a pixel's distance from the background colour divided by the
object's distance from it is that coverage; coverage-weighted centroids and areas are therefore
sub-pixel exact on clean renders.

A clip of a stylised prompt (``style="cartoon"``, afd/world/render.py) is tracked against its
look: the background is a vertical gradient (one colour per row, from the border's rows), the
object's edge pixels blend the dark outline (not the fill) with the background, and its inner
pixels count as fully covered whatever their shading. On clean renders this is exact up to edge
pixels where the outline band is narrower than a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from afd.video.core import Video
from afd.world.grammar import PLAIN
from afd.world.render import OUTLINE_RGB

FG_THRESHOLD = 40.0  # colour distance (0-255 RGB) from the background that counts as object
MIN_MASS = 1.5  # components lighter than this (coverage-weighted px^2) are noise specks
MAX_FRACTION = 0.25  # a "component" covering more of the frame than this is not an object
_EIGHT = np.ones((3, 3), bool)


@dataclass
class Track:
    """Per-frame measurements of one clip (T frames, pixel units at the clip's resolution).

    found: (T,) bool; cx, cy: (T,) centroid (pixel centres at i + 0.5, NaN where not found);
    area: (T,) coverage-weighted area in px^2 (0 where not found); color: (T, 3) object RGB
    0-255 (NaN where not found); n_objects: (T,) significant components; background: (3,) RGB
    0-255; object_mask: (T, H, W) bool, the main object dilated by one pixel; saliency: (T, H, W)
    float in [0, 1], distance from the background scaled by the object's contrast.
    """

    found: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    area: np.ndarray
    color: np.ndarray
    n_objects: np.ndarray
    background: np.ndarray
    object_mask: np.ndarray
    saliency: np.ndarray
    frames: np.ndarray  # (T, H, W, 3) float 0-255, the pixels tracked
    background_rows: np.ndarray | None = None  # (H, 3) RGB 0-255 per row; None: ``background`` everywhere


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel border over all frames. frames: (T, H, W, 3) 0-255."""
    border = np.concatenate(
        [frames[:, 0].reshape(-1, 3), frames[:, -1].reshape(-1, 3),
         frames[:, :, 0].reshape(-1, 3), frames[:, :, -1].reshape(-1, 3)]
    )
    return np.median(border, axis=0)


def estimate_background_rows(frames: np.ndarray) -> np.ndarray:
    """A vertical gradient from the border: the median of the top row and of the bottom row over
    all frames, linear in between (row centres). frames: (T, H, W, 3) 0-255 -> (H, 3)."""
    H = frames.shape[1]
    top, bottom = np.median(frames[:, 0].reshape(-1, 3), 0), np.median(frames[:, -1].reshape(-1, 3), 0)
    w = np.linspace(0.0, 1.0, H)[:, None]
    return top + w * (bottom - top)


def _outline_coverage(frame: np.ndarray, rows: np.ndarray, fill: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The object's coverage of each pixel of a stylised frame (H, W, 3), reading each pixel as
    background (``rows`` (H, 3)) + a * (ink - background) + b * (fill - ink): an edge pixel can hold
    both the outline band and some fill where the band is under a pixel wide. Solved per pixel by
    least squares over the three channels; where ink, fill and background are nearly collinear the
    two terms cannot be told apart and ``fallback`` (H, W), the outline-only reading, is used."""
    ink = 255 * np.array(OUTLINE_RGB)
    u = (ink - rows)[:, None, :]  # (H, 1, 3)
    v = (fill - ink)[None, None, :]  # (1, 1, 3)
    r = frame - rows[:, None, :]
    uu, vv, uv = (u * u).sum(-1), (v * v).sum(-1), (u * v).sum(-1)
    det = uu * vv - uv * uv  # (H, 1)
    ru, rv = (r * u).sum(-1), (r * v).sum(-1)
    a = (ru * vv - rv * uv) / np.maximum(det, 1e-9)
    well_posed = det > 0.05 * uu * vv  # the angle between the two colour directions is over ~13 degrees
    return np.clip(np.where(well_posed, a, fallback), 0, 1)


def track(video: Video, style: str = PLAIN) -> Track:
    """Track the main object of a clip whose prompt asks for ``style`` (module docstring). See
    ``Track`` for the fields."""
    frames = video.to_uint8().astype(np.float64)
    T, H, W, _ = frames.shape
    styled = style != PLAIN
    if styled:
        rows = estimate_background_rows(frames)
        bg = rows.mean(0)
        dist = np.linalg.norm(frames - rows[None, :, None], axis=-1)  # (T, H, W)
        ink_contrast = np.maximum(np.linalg.norm(rows - 255 * np.array(OUTLINE_RGB), axis=-1), 1e-6)[:, None]  # (H, 1)
    else:
        rows = None
        bg = estimate_background(frames)
        dist = np.linalg.norm(frames - bg, axis=-1)  # (T, H, W)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    found = np.zeros(T, bool)
    cx = np.full(T, np.nan)
    cy = np.full(T, np.nan)
    area = np.zeros(T)
    color = np.full((T, 3), np.nan)
    n_obj = np.zeros(T, int)
    obj_mask = np.zeros((T, H, W), bool)
    contrast_all = []
    for t in range(T):
        d = dist[t]
        fg = d > FG_THRESHOLD
        if styled:  # the outline encloses the fill, however close the shaded fill comes to the background
            fg = ndimage.binary_fill_holes(fg)
        labels, n = ndimage.label(fg, structure=_EIGHT)
        if n == 0:
            continue
        mass = ndimage.sum(d, labels, index=np.arange(1, n + 1))
        core_max = ndimage.maximum(d, labels, index=np.arange(1, n + 1))
        # Mass in units of full-coverage pixels of that component's own colour.
        mass_px = mass / np.maximum(core_max, 1e-9)
        significant = (mass_px >= MIN_MASS) & (mass_px <= MAX_FRACTION * H * W)
        n_obj[t] = int(significant.sum())
        if n_obj[t] == 0:
            continue
        k = int(np.argmax(np.where(significant, mass, -1))) + 1
        comp = labels == k
        contrast = float(core_max[k - 1])
        # Include the one-pixel fringe below the threshold, but not other components.
        region = ndimage.binary_dilation(comp, structure=_EIGHT) & ((labels == 0) | comp)
        if styled:
            # The fill's least shaded pixel (the farthest from the outline's ink) gives the colour;
            # edge pixels are outline over background, inner pixels fully covered.
            ink_d = np.linalg.norm(frames[t] - 255 * np.array(OUTLINE_RGB), axis=-1)
            obj_color = frames[t][np.unravel_index(np.argmax(np.where(comp, ink_d, -1)), comp.shape)]
            contrast = max(float(np.linalg.norm(obj_color - bg)), FG_THRESHOLD)
            inner = ndimage.binary_erosion(comp, structure=_EIGHT)
            alpha = np.maximum(_outline_coverage(frames[t], rows, obj_color, d / ink_contrast), inner) * region
        else:
            core = comp & (d >= 0.9 * contrast)
            obj_color = frames[t][core].mean(0)
            contrast = max(float(np.linalg.norm(obj_color - bg)), FG_THRESHOLD)
            alpha = np.clip(d / contrast, 0, 1) * region
        a = alpha.sum()
        found[t] = True
        cx[t] = (alpha * xs).sum() / a
        cy[t] = (alpha * ys).sum() / a
        area[t] = a
        color[t] = obj_color
        obj_mask[t] = region
        contrast_all.append(contrast)
    scale = np.median(contrast_all) if contrast_all else 255.0
    sal = np.clip(dist / scale, 0, 1)
    return Track(found, cx, cy, area, color, n_obj, bg, obj_mask, sal, frames, rows)
