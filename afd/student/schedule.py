"""The student's noise levels: rectified flow ``x_t = (1 - t) x0 + t eps`` with a timestep shift."""

from __future__ import annotations

import torch


def shift_t(t, shift: float):
    """Map t in [0, 1] to ``s t / (1 + (s - 1) t)``: s > 1 spends more steps at high noise."""
    return shift * t / (1 + (shift - 1) * t)


def step_levels(steps: int, shift: float) -> list[float]:
    """Noise levels of a few-step sampler, from 1 (pure noise) down, e.g. 4 steps at shift 5:
    [1.0, 0.9375, 0.8333, 0.625]. The last level's x0 estimate is the block."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return [float(shift_t(1 - i / steps, shift)) for i in range(steps)]


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process; t: (B, T) per-frame levels broadcast over (C, H, W)."""
    t = t[..., None, None, None]
    return (1 - t) * x0 + t * eps
