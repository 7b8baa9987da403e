"""AFD's student update: DiffusionNFT on the student's own rollouts (docs/method.md section 6).

``nft_loss`` is the paper's Eq. 4 on given velocities, ``prior_loss`` its weighted prior term, and
``nft_student_loss`` the whole objective on a batch of rollouts, formed by the run's ``afd``
config (``AFDMethodConfig``): the levels it trains at (``sampler_timesteps`` or drawn per block),
the guidance (``sampler_guidance``), the loss scale, the trained blocks and the noise sharing.
"""

from __future__ import annotations

import torch

from afd import dist
from afd.device import device_of
from afd.losses import Guidance, forward_noise, velocity
from afd.methods.afd_config import AFDMethodConfig
from afd.student.base import StudentModel
from afd.student.sample import guidance_kwargs
from afd.text.encoder import TextEncoding


def sampler_level_picks(B: int, cfg, generator: torch.Generator, n_blocks: int | None = None) -> torch.Tensor:
    """Which of its sampler levels each block of each clip takes in each of n copies: (n, B, K)
    long, n = the number of levels of a block after the first. Copy j puts block k of clip b at
    index ``perm_bk[j]`` of that block's level list (block 0: ``first_levels``), ``perm_bk`` a
    random permutation, so the n copies visit every level of every block once (block 0's longer
    list, if any, is subsampled). K = ``n_blocks`` (default: the config's; more for a streamed
    clip)."""
    first, levels = cfg.sampler_levels()
    n = len(levels)
    K = n_blocks or cfg.n_blocks
    picks = torch.empty(n, B, K, dtype=torch.long)
    for k in range(K):
        m = len(first if k == 0 else levels)
        perm = dist.rank_rows(lambda r: torch.rand(r, m, generator=generator), B).argsort(dim=1)[:, :n]  # (B, n)
        picks[:, :, k] = perm.T
    return picks


def sampler_timesteps(B: int, cfg, generator: torch.Generator, n_blocks: int | None = None) -> torch.Tensor:
    """Training levels taken from the student's own sampler (the DiffusionNFT reference trains on
    the sampler's levels, not on U[0, 1]): (n, B, T), block k of clip b in copy j at its level
    ``sampler_level_picks`` chose."""
    first, levels = cfg.sampler_levels()
    picks = sampler_level_picks(B, cfg, generator, n_blocks)
    t = torch.empty(picks.shape, dtype=torch.float32)
    for k in range(picks.shape[2]):
        t[:, :, k] = torch.tensor(first if k == 0 else levels, dtype=torch.float32)[picks[:, :, k]]
    return t.repeat_interleave(cfg.block_frames, dim=2)


NFT_SPACES = ("velocity", "x0")


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): mean over every non-batch dim (so the loss scale ignores clip size)."""
    return x.flatten(1).mean(1)


def _check_weights(w: torch.Tensor, B: int) -> None:
    if w.shape != (B,):
        raise ValueError(f"weights must be (B,) = ({B},), got {tuple(w.shape)}")
    if bool(((w < 0) | (w > 1) | ~torch.isfinite(w)).any()):
        raise ValueError("weights must lie in [0, 1]")


def nft_loss(v_theta: torch.Tensor, v_old: torch.Tensor, v_target: torch.Tensor, w: torch.Tensor,
             beta: float, *, x_t: torch.Tensor | None = None, t: torch.Tensor | None = None,
             x0: torch.Tensor | None = None, space: str = "velocity") -> tuple[torch.Tensor, torch.Tensor]:
    """DiffusionNFT loss (paper Eq. 4): ``(loss scalar, per_sample (B,))``.

    v_theta: (B, ...) current velocity (with gradient); v_old: (B, ...) the old policy's velocity
    (detached here); v_target: (B, ...) the forward-process velocity ``eps - x0``; w: (B,) weights
    in [0, 1]; beta > 0. With ``v+ = (1 - beta) v_old + beta v_theta`` and
    ``v- = (1 + beta) v_old - beta v_theta``::

        per_sample_i = w_i ||v+_i - v_i||^2 + (1 - w_i) ||v-_i - v_i||^2,   loss = mean_i per_sample_i

    where ``||.||^2`` is the *mean* (not the sum) of squares over the non-batch dims, like
    ``flow_matching_loss``, so the scale does not depend on the clip size. At v_theta = v_old the
    gradient is ``beta (2 w - 1)`` times that of ``||v_theta - v||^2``, and the per-sample
    minimiser is ``v_old + (2 w - 1)(v - v_old) / beta``: beta acts as an inverse step size.

    ``space="x0"`` (an option of DiffusionNFT's reference code, not the paper's Eq. 4) needs
    x_t (B, ...), t and x0 (B, ...); t is (B, T) per-frame for videos (any leading shape of
    v_theta, broadcast over the remaining dims). The implicit policies are turned into clean
    estimates ``x0+- = x_t - t v+-`` and each sample's squared error ``mean (x0+- - x0)^2`` is
    divided by that same sample's mean absolute error ``mean |x0+- - x0|`` (computed without
    gradient, floored at 1e-5), separately for the positive and the negative branch. The division
    makes each sample's loss roughly scale-free: its gradient has about the same size whether the
    sample is nearly right or far off. Since ``x0+- - x0 = -t (v+- - v)``, this is the velocity
    loss weighted by ``t^2`` per frame, then renormalised per sample. The reference additionally
    multiplies the loss by constants (a_max / beta); those only rescale the learning rate and
    are left out here.
    """
    if space not in NFT_SPACES:
        raise ValueError(f"space must be one of {NFT_SPACES}, got {space!r}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if v_theta.shape != v_old.shape or v_theta.shape != v_target.shape:
        raise ValueError(f"v_theta {tuple(v_theta.shape)}, v_old {tuple(v_old.shape)} and "
                         f"v_target {tuple(v_target.shape)} must have the same shape")
    if v_theta.dim() < 2:
        raise ValueError(f"velocities must be (B, ...) with at least 2 dims, got {tuple(v_theta.shape)}")
    B = v_theta.shape[0]
    _check_weights(w, B)
    v_old = v_old.detach()
    v_target = v_target.detach()
    w = w.detach().to(v_theta.dtype)
    v_plus = (1 - beta) * v_old + beta * v_theta
    v_minus = (1 + beta) * v_old - beta * v_theta
    if space == "velocity":
        pos = _per_sample_mean((v_plus - v_target).pow(2))
        neg = _per_sample_mean((v_minus - v_target).pow(2))
    else:
        if x_t is None or t is None or x0 is None:
            raise ValueError("space='x0' needs x_t, t and x0")
        if x_t.shape != v_theta.shape or x0.shape != v_theta.shape:
            raise ValueError(f"x_t {tuple(x_t.shape)} and x0 {tuple(x0.shape)} "
                             f"must match v_theta {tuple(v_theta.shape)}")
        if t.dim() > v_theta.dim() or tuple(t.shape) != tuple(v_theta.shape[:t.dim()]):
            raise ValueError(f"t {tuple(t.shape)} must be a leading part of the velocity shape {tuple(v_theta.shape)}")
        tt = t.detach().reshape(*t.shape, *([1] * (v_theta.dim() - t.dim())))
        x_t, x0 = x_t.detach(), x0.detach()

        def normalised(v_branch):
            err = x_t - tt * v_branch - x0
            with torch.no_grad():
                scale = _per_sample_mean(err.abs().double()).clamp_min(1e-5).to(err.dtype)
            return _per_sample_mean(err.pow(2)) / scale

        pos, neg = normalised(v_plus), normalised(v_minus)
    per_sample = w * pos + (1 - w) * neg
    return per_sample.mean(), per_sample


def prior_loss(v_theta: torch.Tensor, v_ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``mean_i w_i ||v_theta_i - v_ref_i||^2`` (paper's L_prior); v_theta, v_ref: (B, ...), w: (B,).

    v_ref (the frozen initial student) is detached; ``||.||^2`` is the mean over non-batch dims.
    Weighting by w keeps rollouts the discriminator dislikes (w near 0) from being pulled back
    towards the reference: only the positively judged ones are anchored.
    """
    if v_theta.shape != v_ref.shape:
        raise ValueError(f"v_theta {tuple(v_theta.shape)} and v_ref {tuple(v_ref.shape)} must have the same shape")
    _check_weights(w, v_theta.shape[0])
    per = _per_sample_mean((v_theta - v_ref.detach()).pow(2))
    return (w.detach().to(per.dtype) * per).mean()


def sampler_guidance(model, n: int, frames: int | None = None) -> Guidance | None:
    """The guidance the model's sampler applies to n clips of ``frames`` frames (default: the
    config's), as per-frame scales (None: unguided)."""
    kw = guidance_kwargs(model, n)
    if kw["null_text"] is None:
        return None
    cfg = model.config
    scale = torch.full((n, frames or cfg.frames), kw["guidance"], device=device_of(model))
    scale[:, :cfg.block_frames] = kw["first_guidance"]
    return Guidance(kw["null_text"], scale)


def nft_student_loss(model: StudentModel, old_model: StudentModel, ref_model: StudentModel | None,
                     x0_rollouts: torch.Tensor, text: TextEncoding, w: torch.Tensor, generator: torch.Generator,
                     cfg: AFDMethodConfig, *, group_ids: torch.Tensor | None = None,
                     t: torch.Tensor | None = None, x_t: torch.Tensor | None = None,
                     first_frame: int = 0, space: str | None = None) -> dict[str, torch.Tensor]:
    """AFD's student objective ``L = s L_NFT + lambda_prior L_prior`` on the student's own rollouts,
    formed as ``cfg`` (the run's ``afd`` section) says.

    x0_rollouts: (B, T, C, H, W) finished rollouts in the model's space (detached here); w: (B,)
    weights in [0, 1] from ``afd.methods.advantages.compute_weights``; text: B prompt encodings;
    group_ids: (B,) prompt index per rollout (needed by ``cfg.noise == "group"``). Every block gets
    its own t (``block_timesteps``, in [0.02, 1]) and noise; the three models see the same ``x_t``
    through ``forward_train(x0_hat, x_t, t, text)``: noised block k attends to the rollout's own
    clean blocks < k, exactly what it saw when the rollout was made. ``old_model`` (the EMA policy
    that collected the rollouts) and ``ref_model`` (the frozen initial student; None skips the
    prior term) run without gradient; only ``model``'s parameters get gradients. Any object with
    the same ``forward_train`` / ``to_velocity`` methods works for old/ref (e.g. a LoRA student
    with adapters disabled). ``old_model`` may be ``model`` itself.

    Implied weighting: an x0-predicting student's velocity is ``(x_t - x0_hat) / t`` (t floored
    at 1e-3), so with ``nft_space="velocity"`` an x0 error counts ``1 / t^2`` times (up to 2500x
    at t = 0.02): low-noise blocks dominate the gradient. ``nft_space="x0"`` compares
    ``x_t - t v`` with x0 instead (``nft_loss``), which for such a student is its own x0
    prediction, and normalises each sample by its mean absolute error.

    The recipe options (docs/recipe.md): ``timesteps="sampler"`` trains each rollout once at every
    level of the student's sampler (n copies in one batch, ``sampler_timesteps``); an explicit
    ``t`` (B, T) gives the levels instead of drawing them. ``guidance="sampler"`` makes all three
    velocities the guided ones the sampler uses (so a guided data-collecting policy is the policy
    trained). ``loss_scale="reference"`` multiplies L_NFT by a_max / beta (the reference's
    scale). ``timesteps="minibatch"`` puts the whole batch at one sampler level and
    ``context="noised"`` lets each noised block attend to the noised blocks before it instead of
    the clean ones (Astrolabe's training view, ``forward_noised_context``). ``x_t`` (B, T, C, H, W)
    with ``t`` trains at given noised states (the sampler's own,
    afd.methods.sampler_updates) instead of fresh forward-noised copies; the target velocity is
    then the one that state implies, ``(x_t - x0) / t``. ``first_frame``: L_NFT and the prior
    cover frames from there on (a prefix group's shared frames are left out). ``space`` overrides
    ``cfg.nft_space``. ``nft_blocks="first"`` restricts L_NFT to block 0, where a rollout's physics is chosen
    (the prior still covers every frame). ``noise="group"`` gives the rollouts of one prompt the
    same eps and levels: the NFT gradient is ``(2 w_i - 1)(v_i - v_old_i)`` summed over rollouts,
    and the weights of a prompt's rollouts sum to about zero, so the part of ``v - v_old`` that only
    comes from the noise draw cancels across the group instead of adding variance to every step.

    Returns a dict of scalars: ``loss`` (with gradient), and detached diagnostics ``loss_nft``,
    ``loss_prior``, ``fm_loss`` (plain ``||v_theta - v||^2`` on the rollouts), ``old_dev``
    (``||v_theta - v_old||^2``), ``ref_dev`` (``||v_theta - v_ref||^2``, 0 without ref), plus
    ``nft_per_sample`` (B',) detached (B' = B times the copies of ``timesteps="sampler"``).
    """
    x0 = x0_rollouts.detach()
    _check_weights(w, x0.shape[0])
    w = w.float()
    # Which forward-noise draw each sample uses: its own, or its prompt's (noise=group).
    if cfg.noise == "sample":
        draw = torch.arange(x0.shape[0])
    else:
        if group_ids is None:
            raise ValueError("afd.noise=group needs the rollouts' group_ids")
        draw = torch.unique(group_ids, return_inverse=True)[1]
    if x_t is not None and t is None:
        raise ValueError("nft_student_loss: states x_t need their levels t")
    if t is None and cfg.timesteps == "minibatch":
        # One of the sampler's levels (those of the blocks after the first) for the whole global
        # batch: the generator is seeded alike on every rank.
        levels = model.config.sampler_levels()[1]
        t = torch.full((x0.shape[0], x0.shape[1]), levels[int(torch.randint(len(levels), (1,), generator=generator))])
    if t is None and cfg.timesteps == "sampler":
        # Every rollout once at each of the sampler's levels, all copies in one batch.
        n_draws = int(draw.max()) + 1
        n_blocks = x0.shape[1] // model.config.block_frames
        levels = sampler_timesteps(n_draws, model.config, generator, n_blocks)[:, draw.cpu()]  # (n, B, T)
        n = levels.shape[0]
        x0, w, t = x0.repeat(n, 1, 1, 1, 1), w.repeat(n), levels.flatten(0, 1)
        text = text.index(torch.arange(len(text)).repeat(n))
        draw = torch.cat([draw + j * n_draws for j in range(n)])
    guidance = sampler_guidance(model, x0.shape[0], x0.shape[1]) if cfg.guidance == "sampler" else None
    nft_scale = cfg.advantage.a_max / cfg.beta if cfg.loss_scale == "reference" else 1.0
    # The frames L_NFT covers.
    span = slice(first_frame, model.config.block_frames if cfg.nft_blocks == "first" else x0.shape[1])
    if span.start >= span.stop:
        raise ValueError(f"L_NFT covers no frame: frames {span.start}..{span.stop - 1}")
    noise_index = None if cfg.noise == "sample" else draw

    if x_t is None:
        t, eps, x_t = forward_noise(x0, model.config, generator, cfg.t_shift, t, noise_index)
        v = eps - x0
    else:
        t, x_t = t.to(x0.device), x_t.detach()
        v = (x_t - x0) / t[..., None, None, None]
    v_theta = velocity(model, x0, x_t, t, text, guidance, cfg.context)
    with torch.no_grad():
        v_old = velocity(old_model, x0, x_t, t, text, guidance, cfg.context)
        v_ref = velocity(ref_model, x0, x_t, t, text, guidance, cfg.context) if ref_model is not None else None
    loss_nft, per_sample = nft_loss(v_theta[:, span], v_old[:, span], v[:, span], w, cfg.beta, x_t=x_t[:, span],
                                    t=t[:, span], x0=x0[:, span], space=space or cfg.nft_space)
    loss_nft = nft_scale * loss_nft
    if v_ref is not None:
        # A prefix group's shared frames are left out of the prior too (with recorded states they
        # hold no sampler state, only the clean block).
        loss_prior = prior_loss(v_theta[:, first_frame:], v_ref[:, first_frame:], w)
        loss = loss_nft + cfg.lambda_prior * loss_prior
    else:
        loss_prior = torch.zeros((), dtype=loss_nft.dtype, device=loss_nft.device)
        loss = loss_nft
    with torch.no_grad():
        fm = (v_theta - v).pow(2).mean()
        old_dev = (v_theta - v_old).pow(2).mean()
        ref_dev = (v_theta - v_ref).pow(2).mean() if v_ref is not None else torch.zeros((), device=v_theta.device)
    return {"loss": loss, "loss_nft": loss_nft.detach(), "loss_prior": loss_prior.detach(),
            "fm_loss": fm, "old_dev": old_dev, "ref_dev": ref_dev, "nft_per_sample": per_sample.detach()}
