"""The discriminator's part of an iteration: n_D steps on prompt-paired (teacher, rollout) clips,
then scoring the rollouts for the method (docs/method.md section 4)."""

from __future__ import annotations

import torch

from afd import dist
from afd.device import AmpSetting, autocast
from afd.disc.augment import augment_pair
from afd.disc.losses import bt_loss, gan_loss, pairwise_accuracy, r1_penalty, r_phi
from afd.rollout_groups import per_rollout, rollouts_per_prompt
from afd.text.encoder import TextEncoding
from afd.train.config import DiscTrainConfig

LOSSES = {"bt": bt_loss, "gan": gan_loss}


@torch.no_grad()
def rerender(ref, codec, clips: torch.Tensor, text: TextEncoding, t: float, generator: torch.Generator,
             amp: AmpSetting = False) -> torch.Tensor:
    """Clips as the frozen reference student draws them: noise each clip to level ``t`` and take
    the reference's x0 estimate, block k seeing the clean blocks < k (``forward_train``).

    clips: (B, T, 3, H, W) in [-1, 1]; text: their B encodings. ``t`` in (0, 1): low keeps the
    clip's own rendering, high forgets its motion too. Returns (B, T, 3, H, W) in [-1, 1].
    Teacher clips and rollouts re-rendered alike carry the same rendering artefacts, so a
    discriminator trained on them has to separate the two by what survives the noise: where the
    object is, frame by frame (a conv D trained without it keyed on the student's artefacts instead)."""
    x = codec.encode(clips.float())
    tt = torch.full(x.shape[:2], float(t), device=x.device)
    eps = dist.rank_rows(lambda m: torch.randn((m, *x.shape[1:]), generator=generator), x.shape[0])
    x_t = (1 - t) * x + t * eps.to(x.device)
    with autocast(x, amp):  # ref may be a LoRA view (AdaptersOff) without parameters of its own
        v = ref.to_velocity(ref.forward_train(x, x_t, tt, text), x_t, tt).float()
    return codec.decode(x_t - t * v).clamp(-1, 1)


def rerender_pair(ref, codec, teacher: torch.Tensor, rollouts: torch.Tensor, text: TextEncoding, t: float,
                  generator: torch.Generator, amp: AmpSetting = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``rerender`` both sides of prompt-paired clips: teacher (P, ...) with the P encodings
    ``text``, rollouts (P * G, ...) with each encoding repeated G times. ``t`` <= 0 returns them
    unchanged (``disc.rerender_t`` off)."""
    if t <= 0:
        return teacher, rollouts
    G = rollouts_per_prompt(teacher.shape[0], rollouts.shape[0])
    return (rerender(ref, codec, teacher, text, t, generator, amp),
            rerender(ref, codec, rollouts, per_rollout(text, G), t, generator, amp))


def train_discriminator(disc, opt: torch.optim.Optimizer, cfg: DiscTrainConfig, teacher: torch.Tensor,
                        student: torch.Tensor, prompts: list[str], text: TextEncoding,
                        generator: torch.Generator, amp: AmpSetting = False) -> dict[str, float]:
    """``cfg.steps`` optimizer steps of the D loss (``cfg.loss``) on the full local batch.

    teacher: (P, T, 3, H, W) one clip per prompt; student: (P * G, T, 3, H, W), G rollouts per
    prompt in consecutive rows; both [-1, 1], detached. text: the P prompt encodings. Each step
    mirrors pairs left/right (``augment_pair``, never prompts with a direction) when
    ``cfg.augment``. With lr 0 or 0 steps D stays frozen. Returns d_loss (mean over steps),
    d_acc_train (pairwise accuracy of the last step, on augmented clips), d_grad_norm and r1.
    """
    if cfg.steps == 0 or cfg.lr == 0:
        return {}
    text_s = per_rollout(text, rollouts_per_prompt(teacher.shape[0], student.shape[0]))
    loss_fn = LOSSES[cfg.loss]
    disc.train()
    losses, acc, gn, r1 = [], 0.0, 0.0, 0.0
    for _ in range(cfg.steps):
        if cfg.augment:
            t_x, s_x, _ = augment_pair(teacher, student, prompts, generator)
        else:
            t_x, s_x = teacher, student
        if cfg.r1_gamma > 0:
            t_x = t_x.clone().requires_grad_(True)
        with autocast(disc, amp):
            d_t = disc(t_x, text).float()
            d_s = disc(s_x, text_s).float()
        loss = loss_fn(d_t, d_s)
        if cfg.r1_gamma > 0:
            pen = r1_penalty(d_t, t_x)
            loss = loss + 0.5 * cfg.r1_gamma * pen
            r1 = float(pen.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in disc.parameters() if p.requires_grad]
        dist.average_gradients(params)
        gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
        losses.append(float(loss.detach()))
        acc = float(pairwise_accuracy(d_t.detach(), d_s.detach()))
    opt.zero_grad(set_to_none=True)  # nothing of D's update may leak into the student's step
    return {"d_loss": sum(losses) / len(losses), "d_acc_train": acc, "d_grad_norm": gn, "d_r1": r1}


@torch.no_grad()
def score_pairs(disc, cfg: DiscTrainConfig, teacher: torch.Tensor, student: torch.Tensor, text: TextEncoding,
                amp: AmpSetting = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """D's logits in eval mode (no instance noise, no augmentation): (P,) teacher, (P * G,) rollouts,
    plus the loss, pairwise accuracy and r_phi = mean sigmoid(D(rollout) - D(teacher)) on them."""
    G = rollouts_per_prompt(teacher.shape[0], student.shape[0])
    disc.eval()
    with autocast(disc, amp):
        d_t = disc(teacher, text).float()
        d_s = disc(student, per_rollout(text, G)).float()
    stats = {"d_loss_eval": float(LOSSES[cfg.loss](d_t, d_s)), "d_acc": float(pairwise_accuracy(d_t, d_s)),
             "r_phi": float(r_phi(d_t, d_s)), "d_teacher_mean": float(d_t.mean()), "d_student_mean": float(d_s.mean())}
    return d_t, d_s, stats
