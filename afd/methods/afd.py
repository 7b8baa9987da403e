"""AFD: discriminator scores -> per-rollout weights -> DiffusionNFT on the student's own rollouts.

docs/method.md sections 5-6: the weights come from ``compute_weights`` (per-prompt baseline, global
std gathered over ranks, clip, map to [0, 1]); the update is ``afd.methods.nft.nft_student_loss`` (L_NFT plus
lambda_prior times the w-weighted prior toward the frozen initial student) on forward-noised
copies of the rollouts, in the student's space exactly as they were generated. No gradient ever
flows through the rollout or the discriminator. The recipe options (``afd.timesteps``,
``afd.loss_scale``, ``afd.guidance``; docs/recipe.md) change only how that loss is formed.
"""

from __future__ import annotations

import torch

from afd import dist
from afd.methods.advantages import compute_weights
from afd.methods.base import Batch, Method, Prepared
from afd.methods.filtered import reward_filtered_loss
from afd.methods.nft import nft_student_loss
from afd.methods.sampler_updates import policy_gradient_loss, sampler_states_loss

SAMPLER_UPDATES = ("sampler-states", "policy-gradient")  # the updates that train on Batch.sampler


class AFD(Method):
    name = "afd"
    uses_rollouts = True
    uses_discriminator = True
    progress_keys = ("d_acc", "r_phi", "reward_fidelity", "loss_nft")

    def prepare(self, batch: Batch) -> Prepared:
        adv = compute_weights(batch.d_student, batch.group_ids, self.cfg.afd.advantage, gather=dist.gather_cat)
        return Prepared(weights=adv.weights, stats=adv.summary)

    @property
    def records_sampler(self) -> bool:
        return self.cfg.afd.update in SAMPLER_UPDATES

    @property
    def prefix_groups(self) -> bool:
        return self.cfg.afd.prefix_groups

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        m, a = self.models, self.cfg.afd
        args = (batch.rollout_latents, batch.rollout_text, prepared.weights)
        first_frame = batch.branch_block * m.student.config.block_frames  # a prefix group's shared frames stay out
        if a.update == "reward-filtered":
            return reward_filtered_loss(m.student, m.ref, *args, batch.group_ids, generator, a, first_frame=first_frame)
        if a.update == "sampler-states":
            return sampler_states_loss(m.student, m.old, m.ref, *args, batch.sampler, generator, a,
                                       first_frame=first_frame)
        if a.update == "policy-gradient":
            return policy_gradient_loss(m.student, m.old, m.ref, *args, batch.sampler, a, first_frame=first_frame)
        out = nft_student_loss(m.student, m.old, m.ref, *args, generator, a, group_ids=batch.group_ids,
                               first_frame=first_frame)
        out.pop("nft_per_sample")
        return out
