"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch

from afd import dist


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` to hold the averaged weights."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied). ``ema`` is
    a plain module; ``model`` may be FSDP2-sharded (its parameters are then gathered: every rank calls this)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        if not p.requires_grad and dist.is_sharded(p):
            continue  # frozen (a LoRA base): equal in both already, so no gather
        e.lerp_(dist.gathered(p.detach()), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def warmup_decay(decay: float, step: int) -> float:
    """Smaller decay early on, so the average is not dominated by the random initialisation."""
    return min(decay, (1 + step) / (10 + step))
