"""AFD: discriminator scores -> per-rollout weights -> DiffusionNFT on the student's own rollouts.

method.md sections 5-6: the weights come from ``compute_weights`` (per-prompt baseline, global
std gathered over ranks, clip, map to [0, 1]); the update is ``nft_student_loss`` (L_NFT plus
lambda_prior times the w-weighted prior toward the frozen initial student) on forward-noised
copies of the rollouts. No gradient ever flows through the rollout or the discriminator.
"""

from __future__ import annotations

import torch

from afd.losses import nft_student_loss
from afd.methods.advantages import compute_weights
from afd.methods.base import Batch, Method, Prepared
from afd.train import dist


class AFD(Method):
    name = "afd"
    uses_rollouts = True
    uses_discriminator = True

    def prepare(self, batch: Batch) -> Prepared:
        adv = compute_weights(batch.d_student, batch.group_ids, self.cfg.afd.advantage, gather=dist.gather_cat)
        return Prepared(weights=adv.weights, stats=adv.summary)

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.afd
        m = self.models
        out = nft_student_loss(m.student, m.old, m.ref, m.codec.encode(batch.rollouts), batch.rollout_text,
                               prepared.weights.float(), generator, c.beta, c.lambda_prior,
                               shift=c.t_shift, space=c.nft_space)
        out.pop("nft_per_sample")
        return out
