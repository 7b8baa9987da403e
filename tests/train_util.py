"""Shared settings for tests: a tiny student (saved, or perturbed in memory) and tiny run overrides."""

from __future__ import annotations

import torch

from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig


def make_tiny_student(directory, **config):
    """A tiny random student with non-zero output layers (adaLN-Zero would make it constant);
    ``config`` overrides its StudentConfig (e.g. the state codec's fields)."""
    torch.manual_seed(0)
    model = CausalVideoTransformer(StudentConfig(**{**dict(dim=32, depth=1, heads=2, steps=2, shift=1.0), **config}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.save_pretrained(directory)


def tiny_args(student, run_dir, cache_dir, *extra) -> list[str]:
    return [f"run.dir={run_dir}", f"teacher.cache_dir={cache_dir}", f"student.checkpoint={student}",
            "train.prompts=2", "train.rollouts=2", "teacher.prefetch=false", "disc.model.width=4",
            "disc.model.hidden=16", "eval.every=2", "eval.prompts_per_split=1", "eval.strip_prompts=1",
            "eval.final_prompts_per_split=2", "eval.final_per_prompt=1", "run.save_every=2",
            "train.lr=1e-3", "disc.lr=1e-3", "dmd.head_hidden=8", *extra]


def perturbed_model(seed: int = 0, **config) -> CausalVideoTransformer:
    """A small 12-frame 16x16 student in eval mode whose zero-initialised branches are perturbed,
    so every path matters; ``config`` overrides its StudentConfig (block_frames, window, ...)."""
    torch.manual_seed(seed)
    cfg = StudentConfig(**{**dict(frames=12, height=16, width=16, patch=4, dim=32, depth=2, heads=2, refine=4),
                           **config})
    model = CausalVideoTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model
