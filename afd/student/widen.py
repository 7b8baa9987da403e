"""A student with more latent channels than it was trained with, sampling what it sampled before.

Used to give a shipped state student the cartoon strengths (docs/style.md): the new channels are
read with zero weights, so the old channels' predictions are unchanged, and predicted as a
constant (the plain look), so the wider student samples the same clips as the narrow one until
training moves the new weights. The constant is exact only for an x0-predicting student, whose
output is the clean latent itself.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from afd.student.backbones.transformer import CausalVideoTransformer


def widen_channels(model: CausalVideoTransformer, channels: int, value: float) -> CausalVideoTransformer:
    """A copy of ``model`` with ``channels`` latent channels (more than its own), the new ones read
    with zero weights and predicted as ``value``. Needs ``prediction: x0``, ``patch: 1`` (one token
    per latent pixel) and no refinement head; raises ValueError naming what differs."""
    cfg = model.config
    if channels <= cfg.channels:
        raise ValueError(f"widen to {channels} channels: the student already has {cfg.channels}")
    if cfg.prediction != "x0" or cfg.patch != 1 or cfg.refine:
        raise ValueError(f"widening needs prediction x0, patch 1 and refine 0 (a constant output is then the "
                         f"new channels' clean value); got prediction {cfg.prediction!r}, patch {cfg.patch}, "
                         f"refine {cfg.refine}")
    wide = CausalVideoTransformer(replace(cfg, channels=channels, widened_from=cfg.widened_from or cfg.channels))
    state = model.state_dict()
    old = cfg.channels
    with torch.no_grad():
        w_in = torch.zeros_like(wide.patch_in.weight)
        w_in[:, :old] = state["patch_in.weight"]
        w_out = torch.zeros_like(wide.patch_out.weight)
        w_out[:old] = state["patch_out.weight"]
        b_out = torch.full_like(wide.patch_out.bias, float(value))
        b_out[:old] = state["patch_out.bias"]
    state.update({"patch_in.weight": w_in, "patch_out.weight": w_out, "patch_out.bias": b_out})
    wide.load_state_dict(state)
    return wide.train(model.training)
