"""Pieces the gradient-through-rollout baselines (GAN, DMD) share."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from afd import dist
from afd.device import AmpSetting
from afd.losses import prior_regulariser
from afd.student.rollout import rollout, rollout_noise
from afd.student.sample import guidance_kwargs
from afd.text.encoder import TextEncoding


def draw_grad_steps(n_blocks: int, n_steps: int, generator: torch.Generator) -> list[int]:
    """One denoising step per block that carries the gradient (Self-Forcing's random exit).

    The generator is seeded identically on every rank (by (seed, iteration, student step)); the
    steps are still broadcast from rank 0, as every rank must run the same forward passes."""
    return dist.broadcast_ints([int(i) for i in torch.randint(0, n_steps, (n_blocks,), generator=generator)])


def rollout_with_grad(student, prompts: list[str], text: TextEncoding, generator: torch.Generator,
                      amp: AmpSetting = "auto") -> torch.Tensor:
    """Fresh rollouts of the *current* student, differentiable through one step per block.

    prompts: N prompt strings (one per rollout); text: their encodings. Returns x0 (N, T, C, H, W)
    in the student's space with a graph through the chosen step of every block; earlier steps
    and every cache write run without gradient (``rollout(grad_steps=...)``)."""
    cfg = student.config
    first, levels = cfg.sampler_levels()
    # Indices < len(levels) are valid in block 0 too (it has at least as many levels).
    grad_steps = draw_grad_steps(cfg.n_blocks, len(levels), generator)
    seeds = [int(s) for s in dist.rank_rows(lambda n: torch.randint(0, 2**31 - 1, (n,), generator=generator),
                                             len(prompts))]
    noise = rollout_noise(prompts, seeds, student, len(first))
    return rollout(student, text, noise, levels, grad_steps=grad_steps, amp=amp, first_levels=first,
                   **guidance_kwargs(student, len(prompts)))


def batch_rollout_with_grad(models, batch, rollouts_per_prompt: int, generator: torch.Generator,
                            amp: AmpSetting = "auto") -> torch.Tensor:
    """``rollout_with_grad`` for G fresh rollouts of each prompt of a ``Batch`` (prompt i in rows
    i*G .. i*G+G-1, matching ``batch.rollout_text``)."""
    prompts = [p for p in batch.prompts for _ in range(rollouts_per_prompt)]
    return rollout_with_grad(models.student, prompts, batch.rollout_text, generator, amp=amp)


@contextmanager
def frozen(module: torch.nn.Module):
    """Parameters of ``module`` take no gradient inside the block (the graph still flows through
    its activations to its inputs), and it runs in eval mode; both restored afterwards."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False)
    module.eval()
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
        module.train(was_training)


def adversarial_objective(loss_gen: torch.Tensor, stats: dict, models, x0: torch.Tensor, text: TextEncoding,
                          generator: torch.Generator, lambda_prior: float) -> dict[str, torch.Tensor]:
    """A gradient-through-rollout method's result: ``loss_gen`` plus, if ``lambda_prior`` > 0, the
    unweighted prior toward the initial student on forward-noised copies of the rollouts x0."""
    out = {"loss_gen": loss_gen.detach(), **stats}
    loss = loss_gen
    if lambda_prior > 0:
        loss_prior = prior_regulariser(models.student, models.ref, x0, text, generator)
        loss = loss + lambda_prior * loss_prior
        out["loss_prior"] = loss_prior.detach()
    out["loss"] = loss
    return out
