"""Prompts + seeds -> finished student clips: text encoding, noise, the rollout, decoding."""

from __future__ import annotations

import torch

from afd.device import AmpSetting, device_of
from afd.student.base import StudentModel
from afd.student.codec import make_codec
from afd.student.rollout import rollout, rollout_noise
from afd.text.select import text_encoder_for


def guidance_kwargs(model: StudentModel, n: int, guidance: float | None = None,
                    first_guidance: float | None = None) -> dict:
    """``rollout``'s guidance arguments for n clips: the scales of blocks >= 1 and of block 0
    (defaults: the model config's ``guidance`` and ``first_guidance``, whose 0 means the same as
    ``guidance``; an explicit ``guidance`` alone sets both) and, unless both are 1 (off), n encodings
    of the config's ``null_prompt``.
    Every rollout of a student (sampling, evaluation, on-policy collection, the baselines'
    differentiable rollouts) takes them from here, so all use the same sampler."""
    cfg = model.config
    g = cfg.guidance if guidance is None else guidance
    if first_guidance is not None:
        g0 = first_guidance
    else:
        g0 = (cfg.first_guidance or g) if guidance is None else guidance
    if g == 1 and g0 == 1:
        return {"guidance": 1.0, "first_guidance": 1.0, "null_text": None}
    null = text_encoder_for(cfg).encode([cfg.null_prompt] * n).to(device_of(model))
    return {"guidance": g, "first_guidance": g0, "null_text": null}


def blocks_for_frames(cfg, frames: int) -> int:
    """How many blocks make a clip of ``frames`` frames (any length: past the config's ``frames``
    the rollout streams); a ValueError naming the problem otherwise."""
    F = cfg.block_frames
    if frames < F:
        raise ValueError(f"frames {frames} is below one block: the student generates blocks of {F} frames")
    if frames % F:
        raise ValueError(f"frames {frames} is not a multiple of the student's {F}-frame blocks "
                         f"(e.g. {frames // F * F} or {(frames // F + 1) * F})")
    if frames > cfg.frames:
        from afd.student.rollout import check_stream_length, context_blocks

        context_blocks(frames // F - 1, cfg)  # an error if this model cannot stream
        check_stream_length(cfg, frames)
    return frames // F


@torch.no_grad()
def generate(model: StudentModel, prompts: list[str], seeds: list[int], *, steps: int | None = None,
             shift: float | None = None, batch_size: int = 32, amp: AmpSetting = "auto", use_cache: bool = True,
             renoise: str | None = None, first_steps: int | None = None, prefix: torch.Tensor | None = None,
             n_blocks: int | None = None, guidance: float | None = None, first_guidance: float | None = None,
             frames: int | None = None, progress=None) -> torch.Tensor:
    """Sample one clip per (prompt, seed): (B, T, 3, H, W) float in [-1, 1], on the CPU whatever the
    model's device (finished clips go to files, metrics and pictures).

    ``prefix``: (B, n, 3, H, W) in [-1, 1], the opening frames of each clip (whole blocks); the
    student continues them (``rollout(prefix=...)``) and the returned clips start with them.
    ``n_blocks``: stop after that many blocks (prefix included); the clips are then shorter.
    ``frames``: the clips' length in frames instead (a whole number of blocks, any length: past
    the config's ``frames`` the student streams with its rolling window, docs/long-videos.md).

    Deterministic per clip (the noise is keyed by prompt and seed, not by batch position).
    ``steps``/``shift``/``renoise``/``first_steps`` (block 0's steps)/``guidance`` (classifier-free
    guidance against the config's ``null_prompt``; 1 = off)/``first_guidance`` (block 0's; see
    ``guidance_kwargs``) default to the model config's sampler. ``progress``: an optional
    callable told how many clips finished after each batch.
    """
    cfg = model.config
    if frames is not None:
        if n_blocks is not None:
            raise ValueError("give frames or n_blocks, not both")
        n_blocks = blocks_for_frames(cfg, frames)
    first, levels = cfg.sampler_levels(steps, shift, first_steps)
    codec = make_codec(cfg)
    encoder = text_encoder_for(cfg)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
            noise = rollout_noise(p, s, model, len(first), n_blocks)
            pre = codec.encode(prefix[i:i + batch_size]) if prefix is not None else None
            x0 = rollout(model, encoder.encode(p), noise, levels, amp=amp, use_cache=use_cache, renoise=renoise,
                         prefix=pre, first_levels=first, n_blocks=n_blocks,
                         **guidance_kwargs(model, len(p), guidance, first_guidance))
            out.append(codec.decode(x0).cpu())
            if progress is not None:
                progress(len(p))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
