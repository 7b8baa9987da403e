"""VBench-style motion metrics with classical optical flow (OpenCV Farneback) in place of RAFT/AMT.

Flow is computed on the tracker's saliency image (distance from the background), upsampled
``FLOW_UPSAMPLE`` times: luminance alone cannot see, e.g., a magenta ball on a gray background,
and Farneback needs a few pixels of structure to lock on to a small object.
"""

from __future__ import annotations

import cv2
import numpy as np

from afd.eval.tracker import Track

FLOW_UPSAMPLE = 2


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow a -> b in pixels of the input resolution. a, b: (H, W) saliency in [0, 1]."""
    H, W = a.shape
    s = FLOW_UPSAMPLE
    big = [cv2.resize((x * 255).astype(np.uint8), (W * s, H * s), interpolation=cv2.INTER_LINEAR) for x in (a, b)]
    f = cv2.calcOpticalFlowFarneback(big[0], big[1], None, 0.5, 3, 9, 3, 5, 1.2, 0)
    f = cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA) / s
    return f


def dynamic(tr: Track) -> bool:
    """VBench's dynamic-degree rule: per frame pair, the mean of the top 5% flow magnitudes;
    the clip is dynamic if at least round(4 N / 16) pairs exceed 6 * min(H, W) / 256 pixels."""
    T, H, W = tr.saliency.shape
    thresh = 6.0 * min(H, W) / 256.0
    need = round(4 * T / 16)
    count = 0
    for t in range(T - 1):
        mag = np.linalg.norm(_flow(tr.saliency[t], tr.saliency[t + 1]), axis=-1).ravel()
        k = max(1, int(0.05 * mag.size))
        if np.partition(mag, -k)[-k:].mean() > thresh:
            count += 1
            if count >= need:
                return True
    return False


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample img at p + flow(p). img: (H, W, C) float; flow: (H, W, 2)."""
    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(img.astype(np.float32), gx + flow[..., 0], gy + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def motion_smoothness(tr: Track) -> float:
    """VBench's idea with flow interpolation: rebuild each odd frame from its two even
    neighbours by warping each halfway along the flow between them; score is
    1 - mean |error| / 255 over pixels and channels (in [0, 1])."""
    T = tr.frames.shape[0]
    errs = []
    for t in range(1, T - 1, 2):
        f02 = _flow(tr.saliency[t - 1], tr.saliency[t + 1])
        f20 = _flow(tr.saliency[t + 1], tr.saliency[t - 1])
        a = _warp(tr.frames[t - 1], -0.5 * f02)
        b = _warp(tr.frames[t + 1], -0.5 * f20)
        errs.append(np.abs(0.5 * (a + b) - tr.frames[t]).mean())
    return 1.0 - float(np.mean(errs)) / 255.0 if errs else 1.0


def temporal_flickering(tr: Track) -> float:
    """VBench's formula, 1 - mean |frame difference| / 255, over background pixels only
    (outside the object in both frames); in [0, 1]."""
    T = tr.frames.shape[0]
    diffs = []
    for t in range(T - 1):
        bg = ~(tr.object_mask[t] | tr.object_mask[t + 1])
        if bg.any():
            diffs.append(np.abs(tr.frames[t + 1] - tr.frames[t])[bg].mean())
    return 1.0 - float(np.mean(diffs)) / 255.0 if diffs else 1.0
