"""From discriminator scores to per-rollout NFT weights (docs/method.md section 5, paper Eq. 2, Table 3).

For N rollouts with scores ``s_i = D(x0_hat_i, y_i)`` (already stop-gradient):

1. reward ``r_i = s_i`` (``reward="logit"``) or ``r_i = exp(s_i)`` (``reward="ratio"``, paper
   Sec. 10: with s the discriminator's logit rho, exp(rho) estimates pi_T / pi_theta);
2. baseline ``b_i`` = mean reward of the rollouts sharing rollout i's prompt (group id); when every
   prompt of the (global) batch has a single rollout (G = 1), the batch mean instead;
3. advantage ``A_i = (r_i - b_i) / (std + std_eps)`` with ``std`` the *population* standard
   deviation (divide by N, not N - 1) of all rewards of the global batch ("global std with
   per-prompt tracking"), clipped to ``[-a_max, a_max]``;
4. weight ``w_i = clamp(0.5 + 0.5 A_i / a_max, 0, 1)``.

Population std is the DiffusionNFT reference's choice (numpy's default) and stays defined for a
single rollout (std 0, so every advantage is 0 and every weight 0.5, rather than NaN).

Multi-process training: ``gather`` maps a local tensor (N_local, ...) to the concatenation over
ranks (a collective such as ``dist.all_gather`` + ``torch.cat``; every rank calls it the same
number of times, in the same order, with the same trailing shape). The std, the G = 1 batch
mean, the finiteness checks and the logged summary use gathered values, so every rank gets the
same statistics and raises the same errors. Per-prompt baselines are computed locally: the
trainer keeps all G rollouts of a prompt on one rank (per-rank prompt shards), so group ids only
need to be unique within a rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from afd.methods.advantage_config import AdvantageConfig

__all__ = ["AdvantageConfig", "AdvantageStats", "compute_weights"]

Gather = Callable[[torch.Tensor], torch.Tensor]

@dataclass
class AdvantageStats:
    """Per-rollout results for the local rollouts, all (N,) float32 on the scores' device.

    weights:    w in [0, 1], the NFT positive/negative mix (0.5 = neutral).
    advantages: A after clipping to [-a_max, a_max].
    baseline:   b, the per-prompt (or, at G = 1, global batch) mean reward.
    rewards:    r, the scores after the reward transform.
    std:        global (gathered) population std of the rewards, without std_eps.
    summary:    float statistics of the global batch for logging (see ``compute_weights``).
    """

    weights: torch.Tensor
    advantages: torch.Tensor
    baseline: torch.Tensor
    rewards: torch.Tensor
    std: float
    summary: dict[str, float] = field(default_factory=dict)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _describe(prefix: str, x: torch.Tensor) -> dict[str, float]:
    return {f"{prefix}_mean": float(x.mean()), f"{prefix}_std": float(x.std(unbiased=False)),
            f"{prefix}_min": float(x.min()), f"{prefix}_max": float(x.max())}


def compute_weights(scores: torch.Tensor, group_ids: torch.Tensor, cfg: AdvantageConfig | None = None,
                    gather: Gather | None = None) -> AdvantageStats:
    """Turn discriminator scores into NFT weights (module docstring, steps 1-4).

    scores: (N,) float, the discriminator's scalar per local rollout (detached here).
    group_ids: (N,) integer; rollouts of the same prompt share an id (ids are local to a rank).
    gather: optional collective, local (N_local, k) -> (N_global, k); identity by default.

    ``summary`` holds, over the global batch: ``n``, ``max_group_size``, mean/std/min/max of
    ``score``, ``reward``, ``adv`` (clipped) and ``weight`` (population std), ``frac_clipped``
    (|A| > a_max before clipping), ``frac_w0`` / ``frac_w1`` (weights exactly 0 / 1).

    Raises ValueError on empty input, mismatched or non-1-D shapes, non-integer group ids,
    non-finite scores, or a ratio reward that overflows.
    """
    cfg = cfg or AdvantageConfig()
    gather = gather or _identity
    if not isinstance(scores, torch.Tensor) or not isinstance(group_ids, torch.Tensor):
        raise ValueError("scores and group_ids must be tensors")
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {tuple(scores.shape)}")
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D (N,), got shape {tuple(group_ids.shape)}")
    if scores.shape[0] != group_ids.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores but {group_ids.shape[0]} group ids")
    if scores.shape[0] == 0:
        raise ValueError("no rollouts: scores is empty")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")

    # float64 throughout: exp(rho) and the std of near-equal logits lose too much in float32.
    s = scores.detach().to(torch.float64)
    # Non-finite scores turn into NaN/inf rewards; they are rejected after the gather, so every
    # rank sees them and raises together instead of leaving the others blocked in a collective.
    r = torch.exp(s) if cfg.reward == "ratio" else s.clone()
    _, inverse, counts = torch.unique(group_ids.to(s.device), return_inverse=True, return_counts=True)
    sizes = counts[inverse].to(torch.float64)

    g = gather(torch.stack([s, r, sizes], dim=1))
    g_s, g_r, g_sizes = g[:, 0], g[:, 1], g[:, 2]
    bad = ~torch.isfinite(g_s)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"non-finite discriminator scores: {int(bad.sum())} of {g_s.numel()} "
                         f"(first at gathered index {first}: {float(g_s[first])})")
    if not bool(torch.isfinite(g_r).all()):
        raise ValueError(f"ratio reward exp(score) overflowed float64 (max score {float(g_s.max()):.1f}); "
                         "use reward='logit' or bound the discriminator's logits")

    std = float(g_r.std(unbiased=False))
    max_group = int(g_sizes.max())
    if max_group == 1:
        baseline = torch.full_like(r, float(g_r.mean()))
    else:
        # A prompt with a single rollout among larger groups is its own baseline: A = 0, w = 0.5.
        sums = torch.zeros(counts.shape[0], dtype=torch.float64, device=r.device).index_add_(0, inverse, r)
        baseline = (sums / counts.to(torch.float64))[inverse]
    if cfg.std_over == "residuals":
        std = float(gather((r - baseline)[:, None])[:, 0].std(unbiased=False))
    raw = (r - baseline) / (std + cfg.std_eps)
    adv = raw.clamp(-cfg.a_max, cfg.a_max)
    w = (0.5 + 0.5 * adv / cfg.a_max).clamp(0.0, 1.0)

    g_raw = gather(raw[:, None])[:, 0]
    g_adv = g_raw.clamp(-cfg.a_max, cfg.a_max)
    g_w = (0.5 + 0.5 * g_adv / cfg.a_max).clamp(0.0, 1.0)
    summary = {"n": float(g_s.numel()), "max_group_size": float(max_group),
               **_describe("score", g_s), **_describe("reward", g_r),
               **_describe("adv", g_adv), **_describe("weight", g_w),
               "frac_clipped": float((g_raw.abs() > cfg.a_max).double().mean()),
               "frac_w0": float((g_w == 0).double().mean()), "frac_w1": float((g_w == 1).double().mean())}

    f32 = torch.float32
    return AdvantageStats(weights=w.to(f32), advantages=adv.to(f32), baseline=baseline.to(f32),
                          rewards=r.to(f32), std=std, summary=summary)
