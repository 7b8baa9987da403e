"""Rank agreement for the log-only fidelity measures (``afd.train.callbacks.JudgeCallback``).

``reward_fidelity`` is Spearman's rho, over one iteration's rollouts, between the method's weights
and a judge's exact score (the world's physical consistency, ``afd.eval.measures``); the same rho
with each rendering cue says what else the discriminator rewards. +1: the same order; 0:
unrelated; NaN: a constant side. Logged only: training never sees a judge.
"""

from __future__ import annotations

import math

import numpy as np


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
