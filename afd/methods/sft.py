"""SFT: flow matching on the teacher's clips with teacher-forced clean context (docs/method.md section 9).

The pretraining loss on the fixed budget of teacher clips, so with many iterations it revisits
each clip many times: the paper's off-policy regime. No rollouts and no discriminator. The prior
term toward the frozen initial student is available (``sft.lambda_prior``, unweighted).
"""

from __future__ import annotations

import torch

from afd.losses import fm_error, forward_noise, velocity
from afd.methods.base import Batch, Method, Prepared


class SFT(Method):
    name = "sft"
    uses_rollouts = False
    uses_discriminator = False
    progress_keys = ("loss_fm",)

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.sft
        m = self.models
        x0 = m.codec.encode(batch.teacher)
        t, eps, x_t = forward_noise(x0, m.student.config, generator, c.t_shift)
        v_hat = velocity(m.student, x0, x_t, t, batch.text)
        loss_fm = fm_error(v_hat, eps - x0, t, c.weighting).mean()
        out = {"loss_fm": loss_fm.detach()}
        loss = loss_fm
        if c.lambda_prior > 0:
            with torch.no_grad():
                v_ref = velocity(m.ref, x0, x_t, t, batch.text)
            loss_prior = (v_hat - v_ref).pow(2).mean()
            loss = loss + c.lambda_prior * loss_prior
            out["loss_prior"] = loss_prior.detach()
        out["loss"] = loss
        return out
