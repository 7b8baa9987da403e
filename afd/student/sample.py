"""Prompts + seeds -> finished student clips: text encoding, noise, the rollout, decoding."""

from __future__ import annotations

import torch

from afd.student.codec import make_codec
from afd.student.model import CausalVideoTransformer
from afd.student.rollout import rollout, rollout_noise
from afd.student.schedule import step_levels
from afd.text.encoder import get_text_encoder


@torch.no_grad()
def generate(model: CausalVideoTransformer, prompts: list[str], seeds: list[int], *, steps: int | None = None,
             shift: float | None = None, batch_size: int = 32, amp: bool = True, use_cache: bool = True,
             renoise: str | None = None, progress=None) -> torch.Tensor:
    """Sample one clip per (prompt, seed): (B, T, 3, H, W) float in [-1, 1].

    Deterministic per clip (the noise is keyed by prompt and seed, not by batch position).
    ``steps``/``shift``/``renoise`` default to the model config's sampler. ``progress``: an optional
    callable told how many clips finished after each batch.
    """
    cfg = model.config
    levels = step_levels(steps or cfg.steps, shift or cfg.shift)
    codec = make_codec(cfg.codec)
    encoder = get_text_encoder()
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
            noise = rollout_noise(p, s, model, len(levels))
            x0 = rollout(model, encoder.encode(p), noise, levels, amp=amp, use_cache=use_cache, renoise=renoise)
            out.append(codec.decode(x0))
            if progress is not None:
                progress(len(p))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
