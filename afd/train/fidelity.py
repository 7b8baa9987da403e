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


def pick_lift(key, score, groups) -> tuple[float, float]:
    """What picking each prompt's top-``key`` rollout gains in ``score``: the mean over prompt
    groups of score[argmax key] - mean(score), and the same for the best-scoring rollout (the
    ceiling, what exact weights would pick). A random pick gains 0 on average. This is what a
    top-1 filtered update (afd.update=reward-filtered) trains toward, relative to the group.
    key, score, groups: (n,) sequences; NaN, NaN if no group has two rollouts."""
    key, score, groups = (np.asarray(x, dtype=np.float64) for x in (key, score, groups))
    lifts, ceilings = [], []
    for g in np.unique(groups):
        i = np.flatnonzero(groups == g)
        if len(i) < 2 or not np.isfinite(score[i]).all() or not np.isfinite(key[i]).any():
            continue
        mean = score[i].mean()
        lifts.append(score[i][np.nanargmax(key[i])] - mean)
        ceilings.append(score[i].max() - mean)
    return (float(np.mean(lifts)), float(np.mean(ceilings))) if lifts else (math.nan, math.nan)
