"""Student updates at the sampler's own states (``afd.update=sampler-states`` and
``afd.update=policy-gradient``), from the ``SamplerRecord`` of each rollout.

Why: the paper's NFT trains on fresh forward-noised copies of the finished clip. At the few-step
sampler's levels such a copy pins x0 only loosely, so a prompt's rollouts are indistinguishable
there and each prompt gets one group-averaged shift (docs/recipe.md, "Per-rollout credit"). The
states the sampler actually visited belong to one rollout each:

- ``sampler-states``: NFT's signed regression in x0 space (``afd.methods.nft.nft_loss``,
  ``space="x0"``) at the recorded states, each block at one of its own levels per copy, toward
  the rollout's own finished clip; the prior term as in NFT.
- ``policy-gradient``: with fresh re-noising each sampler step is a Gaussian transition,
  ``x_{i+1} ~ N((1 - t_{i+1}) x0_theta(x_i), t_{i+1}^2 I)``. A clipped likelihood-ratio objective
  on those recorded transitions (Flow-GRPO's form: log-probabilities averaged over a block's
  dimensions, the ratio clipped to ``1 +- pg_clip``) with the clipped advantage
  ``A = a_max (2 w - 1)``, plus ``kl_beta`` times the closed-form KL of each transition to the
  frozen initial student's. The last step of a block (its x0 estimate is the block) is no
  transition and is left out.

Both take ``first_frame``: a prefix group's shared frames are never trained (afd.methods.afd).
"""

from __future__ import annotations

import math

import torch

from afd.losses import Guidance, raw_prediction
from afd.methods.afd_config import AFDMethodConfig
from afd.methods.nft import nft_student_loss, sampler_guidance, sampler_level_picks
from afd.student.base import StudentModel
from afd.student.rollout import SamplerRecord
from afd.text.encoder import TextEncoding

LOG_2PI = math.log(2 * math.pi)


def _per_frame(levels: torch.Tensor, block_frames: int) -> torch.Tensor:
    """(..., K) per-block values -> (..., K * F) per-frame."""
    return levels.repeat_interleave(block_frames, dim=-1)


def _states_at(record: SamplerRecord, steps: torch.Tensor, x0: torch.Tensor,
               block_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block k of clip b at its recorded state number ``steps[b, k]`` (B, K long): returns
    ``x_t`` (B, T, C, H, W), ``t`` (B, T) and ``valid`` (B, K) bool (False where that block made
    no such call: a prefix block; there ``x_t`` is the clean block and t 1, never trained)."""
    B, K = steps.shape
    dev = x0.device
    idx = steps.to(record.states.device)
    states = record.states[torch.arange(B, device=idx.device)[:, None], torch.arange(K, device=idx.device)[None], idx]
    levels = record.levels[torch.arange(K)[None], steps.cpu()]  # (B, K)
    valid = torch.isfinite(levels)
    blocks_x0 = x0.unflatten(1, (K, block_frames))
    states = torch.where(valid.to(dev)[:, :, None, None, None, None], states.to(dev), blocks_x0)
    t = torch.where(valid, levels, torch.ones_like(levels))
    return states.flatten(1, 2), _per_frame(t, block_frames).to(dev), valid


def sampler_states_loss(model: StudentModel, old_model: StudentModel, ref_model: StudentModel | None,
                        x0_rollouts: torch.Tensor, text: TextEncoding, w: torch.Tensor, record: SamplerRecord,
                        generator: torch.Generator, cfg: AFDMethodConfig, *,
                        first_frame: int = 0) -> dict[str, torch.Tensor]:
    """NFT's signed x0-space regression at the rollouts' recorded sampler states.

    x0_rollouts: (B, T, C, H, W) the finished rollouts in the model's space; w: (B,) weights in
    [0, 1]; record: their ``SamplerRecord``. Each rollout appears n times (n = the levels of a
    block after the first), block k of copy j at the recorded state ``sampler_level_picks``
    picks, so every recorded state of every block is trained once per call. Returns
    ``nft_student_loss``'s dict (without ``nft_per_sample``)."""
    cfg_m = model.config
    B = x0_rollouts.shape[0]
    picks = sampler_level_picks(B, cfg_m, generator)  # (n, B, K)
    n = picks.shape[0]
    x_t, t = [], []
    for j in range(n):
        xs, ts, _ = _states_at(record, picks[j], x0_rollouts.detach(), cfg_m.block_frames)
        x_t.append(xs)
        t.append(ts)
    rows = torch.arange(B).repeat(n)
    out = nft_student_loss(model, old_model, ref_model, x0_rollouts.detach().repeat(n, 1, 1, 1, 1),
                           text.index(rows), w.repeat(n), generator, cfg, t=torch.cat(t), x_t=torch.cat(x_t),
                           first_frame=first_frame, space="x0")
    out.pop("nft_per_sample")
    return out


def _x0(model, x_clean: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, text: TextEncoding,
        guidance: Guidance | None) -> torch.Tensor:
    """The model's (guided, if ``guidance``) x0 estimate at states x_t, with the clean clip as
    context, as the sampler formed it."""
    return model.to_x0(raw_prediction(model, x_clean, x_t, t, text, guidance), x_t, t)


def transition_logprob(x_next: torch.Tensor, x0_hat: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """Log-density of the fresh re-noising transition ``x_next ~ N((1 - t) x0_hat, t^2 I)``,
    averaged over each block's dimensions (Flow-GRPO's convention).

    x_next, x0_hat: (B, K, F, C, H, W); t_next: (B, K) levels in (0, 1]. Returns (B, K)."""
    t = t_next[..., None, None, None, None].to(x0_hat.dtype)
    z = (x_next - (1 - t) * x0_hat) / t
    return (-0.5 * z.pow(2) - torch.log(t) - 0.5 * LOG_2PI).flatten(2).mean(2)


def policy_gradient_loss(model: StudentModel, old_model: StudentModel, ref_model: StudentModel | None,
                         x0_rollouts: torch.Tensor, text: TextEncoding, w: torch.Tensor, record: SamplerRecord,
                         cfg: AFDMethodConfig, *, first_frame: int = 0) -> dict[str, torch.Tensor]:
    """Clipped likelihood-ratio objective on the recorded sampler transitions (module docstring).

    x0_rollouts: (B, T, C, H, W) the finished rollouts (the clean context of every block, as in
    the rollout's cache); w: (B,) weights in [0, 1]; record: their ``SamplerRecord`` (made with
    ``renoise="fresh"``). ``old_model`` is the policy that sampled them. Returns ``loss`` and
    detached ``loss_pg``, ``loss_kl``, ``pg_clipped`` (share of ratios outside the clip),
    ``pg_log_ratio`` (mean |log ratio|)."""
    cfg_m = model.config
    if cfg_m.renoise != "fresh":
        raise ValueError(f"afd.update=policy-gradient needs the sampler's fresh re-noising (renoise=fresh); "
                         f"the student's sampler uses renoise={cfg_m.renoise!r}, whose steps are deterministic")
    B, K, F = x0_rollouts.shape[0], cfg_m.n_blocks, cfg_m.block_frames
    x0 = x0_rollouts.detach()
    adv = (cfg.advantage.a_max * (2 * w.detach().float() - 1)).to(x0.device)[:, None]  # (B, 1): clipped A
    first_block = first_frame // F
    guidance = sampler_guidance(model, B)
    levels = record.levels
    pg_terms, kl_terms, clipped, log_ratio = [], [], [], []
    for i in range(levels.shape[1] - 1):
        has = torch.isfinite(levels[:, i]) & torch.isfinite(levels[:, i + 1])  # (K,)
        has[:first_block] = False
        if not bool(has.any()):
            continue
        steps = torch.full((B, K), i, dtype=torch.long)
        x_t, t, _ = _states_at(record, steps, x0, F)
        x_next = record.states[:, :, i + 1].to(x0.device)  # (B, K, F, C, H, W)
        t_next = torch.where(has, levels[:, i + 1], torch.ones(K))[None].expand(B, K).to(x0.device)
        x0_theta = _x0(model, x0, x_t, t, text, guidance).unflatten(1, (K, F))
        lp = transition_logprob(x_next, x0_theta, t_next)
        with torch.no_grad():
            lp_old = transition_logprob(x_next, _x0(old_model, x0, x_t, t, text, guidance).unflatten(1, (K, F)),
                                        t_next)
        mask = has.to(x0.device)[None].expand(B, K)
        ratio = torch.exp(lp - lp_old)
        unclipped = ratio * adv
        clipped_obj = ratio.clamp(1 - cfg.pg_clip, 1 + cfg.pg_clip) * adv
        pg_terms.append(-torch.minimum(unclipped, clipped_obj)[mask])
        clipped.append(((ratio - 1).abs() > cfg.pg_clip)[mask].detach().float())
        log_ratio.append((lp - lp_old)[mask].detach().abs())
        if ref_model is not None and cfg.kl_beta > 0:
            with torch.no_grad():
                x0_ref = _x0(ref_model, x0, x_t, t, text, guidance).unflatten(1, (K, F))
            tn = t_next[..., None, None, None, None]
            # KL(N(m, s^2 I) || N(m_ref, s^2 I)) per dimension is (m - m_ref)^2 / (2 s^2), m = (1 - t) x0.
            kl = ((1 - tn) * (x0_theta - x0_ref)).pow(2).div(2 * tn.pow(2)).flatten(2).mean(2)
            kl_terms.append(kl[mask])
    if not pg_terms:
        raise ValueError("afd.update=policy-gradient: the record holds no sampler transition to train "
                         "(a one-step sampler, or every block in the shared prefix)")
    loss_pg = torch.cat(pg_terms).mean()
    loss = loss_pg
    out = {"loss_pg": loss_pg.detach(), "pg_clipped": torch.cat(clipped).mean(),
           "pg_log_ratio": torch.cat(log_ratio).mean()}
    if kl_terms:
        loss_kl = torch.cat(kl_terms).mean()
        loss = loss + cfg.kl_beta * loss_kl
        out["loss_kl"] = loss_kl.detach()
    out["loss"] = loss
    return out
