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
