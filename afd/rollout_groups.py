"""The layout of a batch of rollouts, defined once: G rollouts per prompt, prompt i's in rows
i * G .. i * G + G - 1.

Teacher clips, text encodings and prompts come one per prompt; everything that pairs a rollout
with its prompt (the discriminator's pairs, the per-prompt advantage baseline, the log-only
fidelity) expands them with ``per_rollout`` and groups rollouts with ``group_ids``.
"""

from __future__ import annotations

from typing import TypeVar

import torch

T = TypeVar("T")


def per_rollout(x: T, G: int) -> T:
    """Each of the P items of ``x`` repeated G times in place: a list of length P * G, a tensor
    (P, ...) -> (P * G, ...), or anything with a ``repeat_interleave(G)`` method (a TextEncoding)."""
    if G < 1:
        raise ValueError(f"G (rollouts per prompt) must be >= 1, got {G}")
    if isinstance(x, torch.Tensor):
        return x.repeat_interleave(G, dim=0)
    if isinstance(x, (list, tuple)):
        return type(x)(item for item in x for _ in range(G))
    return x.repeat_interleave(G)


def group_ids(P: int, G: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(P * G,) int64: the prompt index of each rollout."""
    return per_rollout(torch.arange(P, device=device), G)


def rollouts_per_prompt(n_prompts: int, n_rollouts: int) -> int:
    """G from the two counts; an error if the rollouts are not G per prompt."""
    if n_prompts < 1 or n_rollouts % n_prompts:
        raise ValueError(f"{n_rollouts} rollouts cannot be split evenly over {n_prompts} prompts")
    return n_rollouts // n_prompts
