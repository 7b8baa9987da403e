"""Physics-preserving augmentations for discriminator training (200 teacher clips overfit fast).

Used: **horizontal flip** (mirror left <-> right), with probability 0.5 per prompt pair. The
world is left/right symmetric (walls at both edges, gravity vertical), so a mirrored clip is
an equally valid clip of a mirrored prompt. But prompts name directions ("rolls to the
left"): a flipped clip no longer matches its prompt, and a D trained on it would learn to
ignore direction. So a clip is only flipped when its prompt has no direction word, and in a
teacher/student pair both clips get the same flip (``augment_pair``), so the pair still
differs only in what the student did.

Not used, and why:
- colour changes: object and background colours are in the prompt (same argument as above,
  and there is no prompt-consistent recolouring without rewriting the prompt);
- vertical flip / rotation: gravity points down and the floor is the bottom edge;
- time reversal: bounces lose energy and rolling decelerates; reversed, both are unphysical;
- translations / crops / zoom: the walls and floor are the frame edges, so they would move
  bounce positions relative to the boundaries (and the object's size is in the prompt);
- blur / noise: not physics-related; the trainer's instance noise covers the noise case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from afd import dist
from afd.rollout_groups import per_rollout, rollouts_per_prompt

# Mirroring swaps every one of these (rotation senses included), so a prompt naming any of
# them is never flipped. Paraphrases are legal prompts, hence more than the grammar's words.
_DIRECTION = re.compile(
    r"\b(left|right|leftwards?|rightwards?|east|west|eastwards?|westwards?|"
    r"clockwise|counter-?clockwise|anti-?clockwise)\b",
    re.IGNORECASE,
)


def flip_allowed(prompt: str) -> bool:
    """True if mirroring a clip left/right keeps it consistent with ``prompt``."""
    return _DIRECTION.search(prompt) is None


def _flip_draws(n: int, generator: torch.Generator | None, p_flip: float) -> torch.Tensor:
    if not 0 <= p_flip <= 1:
        raise ValueError(f"p_flip must be in [0, 1], got {p_flip}")
    # One draw per clip of the global batch, this rank's share kept (afd.dist.rank_rows).
    return dist.rank_rows(lambda m: torch.rand(m, generator=generator), n) < p_flip


def _flip_rows(video: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    rows = rows.to(video.device)
    return torch.where(rows.view(-1, 1, 1, 1, 1), video.flip(-1), video)


def augment(video: torch.Tensor, generator: torch.Generator | None = None, *,
            flip_mask: torch.Tensor | Sequence[bool] | None = None, p_flip: float = 0.5) -> torch.Tensor:
    """Randomly mirror clips left/right.

    video: (B, T, C, H, W), any value range. generator: CPU torch.Generator for the draws
    (None = the global RNG). flip_mask: (B,) bool, which clips may be flipped (None = all:
    the caller asserts no prompt has a direction; prefer ``flip_mask=[flip_allowed(p) ...]``).
    Returns a new tensor of the same shape; clip b is flipped with probability p_flip.
    """
    if video.ndim != 5:
        raise ValueError(f"augment expects (B, T, C, H, W) clips, got shape {tuple(video.shape)}")
    b = video.shape[0]
    flip = _flip_draws(b, generator, p_flip)
    if flip_mask is not None:
        mask = torch.as_tensor(flip_mask, dtype=torch.bool).reshape(-1)
        if mask.numel() != b:
            raise ValueError(f"flip_mask has {mask.numel()} entries for {b} clips")
        flip &= mask
    return _flip_rows(video, flip)


def augment_pair(teacher: torch.Tensor, student: torch.Tensor, prompts: Sequence[str],
                 generator: torch.Generator | None = None, *,
                 p_flip: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror teacher and student clips of the same prompt together.

    teacher: (P, T, C, H, W), one clip per prompt; student: (P * G, T, C, H, W), the G
    rollouts of prompt i in rows i * G .. i * G + G - 1; prompts: P strings. Prompts with a
    direction word are never flipped. Returns (teacher', student', flipped (P,) bool).
    """
    p = teacher.shape[0]
    if len(prompts) != p:
        raise ValueError(f"{len(prompts)} prompts for {p} teacher clips")
    if teacher.ndim != 5 or student.ndim != 5:
        raise ValueError(f"clips must be (B, T, C, H, W), got {tuple(teacher.shape)} and {tuple(student.shape)}")
    g = rollouts_per_prompt(p, student.shape[0])
    flip = _flip_draws(p, generator, p_flip) & torch.tensor([flip_allowed(s) for s in prompts], dtype=torch.bool)
    return _flip_rows(teacher, flip), _flip_rows(student, per_rollout(flip, g)), flip
