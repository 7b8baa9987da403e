"""Discriminator objectives and the statistics the trainer logs (docs/method.md section 4).

Shapes. ``d_teacher`` holds one score per prompt, (P,); ``d_student`` holds the scores of
the student rollouts of the same prompts, either (P,) (one rollout each) or (P * G,) / (P, G)
with the G rollouts of prompt i in rows i * G .. i * G + G - 1 (the order of
``TextEncoding.repeat_interleave``). Pairwise quantities compare each rollout with its own
prompt's teacher clip. Every function returns a float32 scalar tensor (0-dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _paired(d_teacher: torch.Tensor, d_student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t, s = d_teacher.float().reshape(-1), d_student.float().reshape(-1)
    if t.numel() == 0:
        raise ValueError("no discriminator scores given (empty d_teacher)")
    if s.numel() == t.numel():
        return t, s
    if s.numel() % t.numel() == 0:
        return t.repeat_interleave(s.numel() // t.numel()), s
    raise ValueError(f"d_student has {s.numel()} scores, not a multiple of d_teacher's {t.numel()}: "
                     "cannot pair rollouts with their prompt's teacher clip")


def bt_loss(d_teacher: torch.Tensor, d_student: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Prompt-paired Bradley-Terry loss (paper Eq. 1): mean -log sigmoid(d_T - d_S).

    Computed as softplus(d_S - d_T), which never overflows. Value in [0, inf); log 2 when
    D cannot tell the pair apart. ``smoothing`` eps in [0, 0.5): the target probability that the
    teacher wins is 1 - eps instead of 1, so the loss is least at d_T - d_S = log((1 - eps) / eps)
    and a pair D already separates that well pushes back: the margins stop growing and D cannot
    saturate (the paper's Fig. 5 failure), whatever eta_D.
    """
    t, s = _paired(d_teacher, d_student)
    loss = F.softplus(s - t)
    if smoothing:
        loss = (1 - smoothing) * loss + smoothing * F.softplus(t - s)
    return loss.mean()


def gan_loss(d_teacher: torch.Tensor, d_student: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """GAN-style binary cross-entropy on absolute logits (the Fig. 6 ablation).

    0.5 * (mean BCE(d_T, 1) + mean BCE(d_S, 0)): class-balanced whatever G is, and on the same
    scale as ``bt_loss`` (log 2 at d = 0), so one eta_D means the same step size for both.
    No pairing is needed; d_teacher and d_student may have any sizes. ``smoothing`` eps: targets
    1 - eps and eps instead of 1 and 0 (label smoothing).
    """
    t, s = d_teacher.float().reshape(-1), d_student.float().reshape(-1)
    if t.numel() == 0 or s.numel() == 0:
        raise ValueError("gan_loss needs at least one teacher and one student score")
    real = (1 - smoothing) * F.softplus(-t) + smoothing * F.softplus(t)
    fake = (1 - smoothing) * F.softplus(s) + smoothing * F.softplus(-s)
    return 0.5 * (real.mean() + fake.mean())


def pairwise_accuracy(d_teacher: torch.Tensor, d_student: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with d_T > d_S, in [0, 1]; ties count one half (chance = 0.5)."""
    t, s = _paired(d_teacher, d_student)
    return ((t > s).float() + 0.5 * (t == s).float()).mean()


def r_phi(d_teacher: torch.Tensor, d_student: torch.Tensor) -> torch.Tensor:
    """mean sigmoid(d_S - d_T) in [0, 1]: the paper's Fig. 5 curve (0.5 = indistinguishable,
    -> 0 when D separates every pair, i.e. saturates)."""
    t, s = _paired(d_teacher, d_student)
    return torch.sigmoid(s - t).mean()


def r1_penalty(d_real: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty: mean over clips of ||dD(x)/dx||^2 on teacher clips.

    d_real: (B,) scores computed from ``real_inputs`` (B, T, 3, H, W), which must have had
    ``requires_grad_(True)`` before the forward pass. The graph is kept (create_graph), so the
    penalty can be added to the loss, conventionally as (gamma / 2) * r1_penalty(...).
    Value >= 0.
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty: real_inputs must require grad (call real_inputs.requires_grad_(True) "
                         "before computing d_real)")
    (grad,) = torch.autograd.grad(d_real.float().sum(), real_inputs, create_graph=True)
    return grad.float().pow(2).reshape(grad.shape[0], -1).sum(1).mean()
