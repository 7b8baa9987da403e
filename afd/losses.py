"""Flow-matching pieces shared by pretraining and the adaptation methods: noise levels, forward
noising, the (guided) velocity of a teacher-forced pass, and the plain flow-matching losses. AFD's
own objective (DiffusionNFT) is ``afd.methods.nft``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from afd import dist
from afd.student.base import StudentModel
from afd.student.schedule import add_noise, shift_t
from afd.text.encoder import TextEncoding


def block_timesteps(B: int, cfg, generator: torch.Generator, shift: float = 1.0,
                    t_min: float = 0.02, n_blocks: int | None = None) -> torch.Tensor:
    """An independent noise level per block, repeated over its frames: (B, T) in [t_min, 1],
    T = ``n_blocks`` (default: the config's) blocks of ``cfg.block_frames`` frames."""
    K = n_blocks or cfg.n_blocks
    u = dist.rank_rows(lambda n: torch.rand(n, K, generator=generator), B)
    t = t_min + (1 - t_min) * shift_t(u, shift)
    return t.repeat_interleave(cfg.block_frames, dim=1)


def forward_noise(x0: torch.Tensor, cfg, generator: torch.Generator, shift: float = 1.0,
                  t: torch.Tensor | None = None,
                  noise_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise each block of x0 (B, T, C, H, W) at its own level: returns (t (B, T), eps, x_t).
    The levels are drawn by ``block_timesteps`` unless given as ``t`` (B, T). ``noise_index``
    (B,) long in [0, n) makes samples with the same index share one draw of eps and of the
    drawn levels (common random numbers: see ``nft_student_loss``)."""
    n = x0.shape[0] if noise_index is None else int(noise_index.max()) + 1
    pick = (lambda z: z) if noise_index is None else (lambda z: z[noise_index.cpu()])  # noqa: E731
    if t is None:
        t = pick(block_timesteps(n, cfg, generator, shift, n_blocks=x0.shape[1] // cfg.block_frames))
    t = t.to(x0.device)
    eps = pick(dist.rank_rows(lambda m: torch.randn((m, *x0.shape[1:]), generator=generator), n)).to(x0.device)
    return t, eps, add_noise(x0, eps, t)


@dataclass
class Guidance:
    """Classifier-free guidance of a training-time velocity: the prediction is
    ``null + scale * (prompt - null)`` per frame, as the guided sampler forms it.

    null_text: B encodings of the null prompt; scale: (B, T) per-frame scales (block 0 may have
    its own, ``StudentConfig.first_guidance``)."""

    null_text: TextEncoding
    scale: torch.Tensor


def raw_prediction(model, x_clean: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, text: TextEncoding,
                   guidance: Guidance | None = None, context: str = "clean") -> torch.Tensor:
    """The model's raw prediction for noised frames x_t (B, T, C, H, W) with the clean clip as
    context (one pass); with ``guidance`` the guided one (conditional and null batched in one
    pass, combined per frame). ``context="noised"``: the noised clip is its own block-causal
    context (``forward_noised_context``; x_clean unused)."""
    if context not in ("clean", "noised"):
        raise ValueError(f"context must be 'clean' or 'noised', got {context!r}")

    def raw(xc, xt, tt, enc):
        if context == "noised":
            return model.forward_noised_context(xt, tt, enc)
        return model.forward_train(xc, xt, tt, enc)

    if guidance is None:
        return raw(x_clean, x_t, t, text)
    two = lambda z: torch.cat([z, z])  # noqa: E731
    cond, null = raw(two(x_clean), two(x_t), two(t), text.cat(guidance.null_text)).chunk(2)
    s = guidance.scale.to(cond.dtype)[..., None, None, None]
    return null + s * (cond - null)


def velocity(model, x_clean: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, text: TextEncoding,
             guidance: Guidance | None = None, context: str = "clean") -> torch.Tensor:
    """The model's velocity for noised frames x_t (``raw_prediction``'s arguments)."""
    return model.to_velocity(raw_prediction(model, x_clean, x_t, t, text, guidance, context), x_t, t)


def fm_error(v_hat: torch.Tensor, v: torch.Tensor, t: torch.Tensor, weighting: str = "x0") -> torch.Tensor:
    """Per-sample flow-matching error (B,): mean of ``(v_hat - v)^2``, times t^2 for "x0" weighting."""
    err = (v_hat - v).pow(2)
    if weighting == "x0":
        err = err * t[..., None, None, None].pow(2)
    elif weighting != "velocity":
        raise ValueError(f"weighting must be 'x0' or 'velocity', got {weighting!r}")
    return err.flatten(1).mean(1)


def flow_matching_loss(model: StudentModel, x0: torch.Tensor, text: TextEncoding,
                       generator: torch.Generator, *, shift: float = 1.0, weighting: str = "x0",
                       per_sample: bool = False) -> torch.Tensor:
    """Flow matching with teacher-forced clean context, all blocks in one pass.

    x0: (B, T, C, H, W) clean clips in the model's space. Each block gets its own t; the noised
    copy is ``(1 - t) x0 + t eps``, the target velocity ``eps - x0``, and block k sees the clean
    blocks < k (``forward_train``). ``weighting="x0"`` weights the squared velocity error by
    t^2, i.e. the x0 error ``||x0_hat - x0||^2`` (what made x0-prediction train);
    ``"velocity"`` is the plain ``||v_hat - v||^2``. Returns the mean (or (B,) per sample).
    """
    t, eps, x_t = forward_noise(x0, model.config, generator, shift)
    per = fm_error(velocity(model, x0, x_t, t, text), eps - x0, t, weighting)
    return per if per_sample else per.mean()


def prior_regulariser(model, ref, x0: torch.Tensor, text: TextEncoding, generator: torch.Generator,
                      shift: float = 1.0) -> torch.Tensor:
    """``mean ||v_theta - v_ref||^2`` on a forward-noised copy of the (detached) clips x0
    (B, T, C, H, W): the unweighted prior term of the baselines (AFD weights it by w)."""
    x0 = x0.detach()
    t, _, x_t = forward_noise(x0, model.config, generator, shift)
    with torch.no_grad():
        v_ref = velocity(ref, x0, x_t, t, text)
    return (velocity(model, x0, x_t, t, text) - v_ref).pow(2).mean()
