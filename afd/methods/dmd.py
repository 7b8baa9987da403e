"""Score-free DMD: a DMD2 scaffold without its score-distillation term (docs/method.md section 9).

Our reading of the paper's one-line description ("DMD without the teacher score"), since a
black-box teacher has no score to distil:

* A *fake-score network* ``f`` with the student's architecture, initialised from the student,
  is trained by flow matching on the student's rollouts (the old policy's, detached) - it tracks
  the student's own distribution, as DMD2's fake score does.
* A small *classifier head* on ``f``'s last-layer features (mean over the noised tokens ->
  LayerNorm -> MLP -> one logit) separates noised teacher clips (label 1) from noised student
  rollouts (label 0), each noised at its own per-block level with its own clean context, trained
  jointly with ``f`` (BCE, DMD2's GAN branch); ``dmd.critic_steps`` steps per iteration.
* The *student* gets only that head's adversarial signal: a fresh rollout with gradient through
  one randomly chosen step per block (as in GAN), forward-noised, scored by the frozen ``f`` +
  head, loss ``-log sigmoid(logit)`` (non-saturating). No regression toward a teacher score.
  The unweighted prior term toward the initial student is available as in GAN.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from afd import dist
from afd.device import autocast, device_of
from afd.disc.losses import gan_loss
from afd.losses import fm_error, forward_noise, velocity
from afd.methods.base import Batch, Method, Prepared
from afd.methods.common import adversarial_objective, batch_rollout_with_grad, frozen
from afd.student.lora import merged_copy


class FakeScore(nn.Module):
    """``f`` (a student-architecture flow model) plus the classifier head on its features."""

    def __init__(self, net, hidden: int):
        super().__init__()
        self.net = net
        dim = net.config.dim
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def logits(self, x_clean: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, text) -> torch.Tensor:
        """(B,) logits for the noised clips x_t (B, T, C, H, W) with clean context x_clean."""
        _, feats = self.net.forward_train(x_clean, x_t, t, text, return_features=True)
        return self.head(feats.float().mean(1)).squeeze(-1)


class DMD(Method):
    name = "dmd"
    uses_rollouts = True
    uses_discriminator = False
    progress_keys = ("fake_acc", "reward_fidelity", "loss_gen")

    def __init__(self, cfg, models, judge=None):
        super().__init__(cfg, models, judge)
        c = cfg.dmd
        student = models.student
        net = merged_copy(student) if cfg.student.lora_rank else copy.deepcopy(student)
        net.requires_grad_(True)
        self.fake = FakeScore(net, c.head_hidden).to(device_of(student)).train()
        self.opt = torch.optim.AdamW(self.fake.parameters(), lr=c.fake_lr, betas=(0.9, 0.999),
                                     weight_decay=cfg.train.weight_decay)

    def modules(self) -> dict[str, nn.Module]:
        return {"dmd_fake": self.fake}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"dmd_fake": self.opt}

    def critic_steps(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        c = self.cfg.dmd
        codec = self.models.codec
        x_s, x_t_ = batch.rollout_latents, codec.encode(batch.teacher)
        cfg = self.fake.net.config
        stats = {"fake_fm": 0.0, "fake_cls": 0.0, "fake_acc": 0.0}
        params = list(self.fake.parameters())
        for _ in range(c.critic_steps):
            with autocast(self.fake, self.cfg.train.amp):
                t, eps, xs_t = forward_noise(x_s, cfg, generator, c.t_shift)
                fm = fm_error(velocity(self.fake.net, x_s, xs_t, t, batch.rollout_text), eps - x_s, t,
                              c.weighting).mean()
                tt, _, xt_t = forward_noise(x_t_, cfg, generator, c.t_shift)
                d_teacher = self.fake.logits(x_t_, xt_t, tt, batch.text).float()
                d_student = self.fake.logits(x_s, xs_t, t, batch.rollout_text).float()
            cls = gan_loss(d_teacher, d_student)
            loss = fm + c.cls_weight * cls
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
            self.opt.step()
            stats["fake_fm"] += float(fm.detach()) / c.critic_steps
            stats["fake_cls"] += float(cls.detach()) / c.critic_steps
            acc = 0.5 * ((d_teacher > 0).float().mean() + (d_student < 0).float().mean())
            stats["fake_acc"] += float(acc) / c.critic_steps
        return {k: dist.mean_scalar(v) for k, v in stats.items()}

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.dmd
        m = self.models
        G = self.cfg.train.rollouts
        x0 = batch_rollout_with_grad(m, batch, G, generator, amp=self.cfg.train.amp)
        t, _, x_t = forward_noise(x0, m.student.config, generator, c.t_shift)
        with frozen(self.fake):
            logit = self.fake.logits(x0, x_t, t, batch.rollout_text).float()
        loss_gen = F.softplus(-logit).mean()
        return adversarial_objective(loss_gen, {"fake_logit": logit.detach().mean()}, m, x0, batch.rollout_text,
                                     generator, c.lambda_prior)
