"""Pixel tracker: background from the border, the object as the connected components far from it.

Works on clips in the evaluation format (32x32). Because world frames blend object and background
linearly with the pixel's coverage, a pixel's distance from the background colour divided by the
object's distance from it is that coverage; coverage-weighted centroids and areas are therefore
sub-pixel exact on clean renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from afd.video.core import Video

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


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """Median colour of the one-pixel border over all frames. frames: (T, H, W, 3) 0-255."""
    border = np.concatenate(
        [frames[:, 0].reshape(-1, 3), frames[:, -1].reshape(-1, 3),
         frames[:, :, 0].reshape(-1, 3), frames[:, :, -1].reshape(-1, 3)]
    )
    return np.median(border, axis=0)


def track(video: Video) -> Track:
    """Track the main object of a clip. See ``Track`` for the fields."""
    frames = video.to_uint8().astype(np.float64)
    T, H, W, _ = frames.shape
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
        labels, n = ndimage.label(d > FG_THRESHOLD, structure=_EIGHT)
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
        core = comp & (d >= 0.9 * contrast)
        obj_color = frames[t][core].mean(0)
        contrast = max(float(np.linalg.norm(obj_color - bg)), FG_THRESHOLD)
        # Include the one-pixel fringe below the threshold, but not other components.
        region = ndimage.binary_dilation(comp, structure=_EIGHT) & ((labels == 0) | comp)
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
    return Track(found, cx, cy, area, color, n_obj, bg, obj_mask, sal, frames)
