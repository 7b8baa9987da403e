"""GAN: the student raises the shared discriminator's score of its own rollouts (docs/method.md section 9).

Gradients go through the rollout, Self-Forcing style: through one randomly chosen denoising step
per block (identical on every rank), with earlier steps and cache writes detached. The
discriminator is the one the loop trains (``disc.loss``: "bt" pairs each rollout with its
prompt's teacher clip, generator loss ``-log sigmoid(D(x) - D(x_T))``; "gan" is the
non-saturating ``-log sigmoid(D(x))``). No NFT. The prior term is as in AFD, unweighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from afd.methods.base import Batch, Method, Prepared
from afd.methods.common import adversarial_objective, batch_rollout_with_grad, frozen
from afd.rollout_groups import per_rollout


class GAN(Method):
    name = "gan"
    uses_rollouts = True  # the discriminator still learns from old-policy rollouts each iteration
    uses_discriminator = True
    progress_keys = ("d_acc", "r_phi", "reward_fidelity", "loss_gen")

    def prepare(self, batch: Batch) -> Prepared:
        return Prepared(scores=batch.d_student)

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.gan
        m = self.models
        G = self.cfg.train.rollouts
        x0 = batch_rollout_with_grad(m, batch, G, generator, amp=self.cfg.train.amp)
        with frozen(m.disc):
            d_s = m.disc(m.codec.decode(x0), batch.rollout_text).float()
        if self.cfg.disc.loss == "bt":
            loss_gen = F.softplus(per_rollout(batch.d_teacher, G) - d_s).mean()
        else:
            loss_gen = F.softplus(-d_s).mean()
        return adversarial_objective(loss_gen, {"d_fake": d_s.detach().mean()}, m, x0, batch.rollout_text, generator,
                                     c.lambda_prior)
