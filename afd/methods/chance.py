"""Chance: AFD's update driven by weights that carry no information, the control for any pick.

Each rollout gets a score drawn at random (standard normal, as a discriminator logit), and AFD's
advantage settings turn it into weights as they would D's. Under ``afd.update=reward-filtered``
that is a uniformly random pick of each prompt's kept rollouts; under the paper's NFT update,
random per-rollout weights. Whatever such a run gains comes from training on the student's own
rollouts at all, not from which ones are favoured, so an AFD or oracle row's gain is read against
it (docs/training.md, beside the oracle). A diagnostic row like the oracle: no
discriminator, no teacher signal in the update.
"""

from __future__ import annotations

import torch

from afd import dist
from afd.methods.advantages import compute_weights
from afd.methods.afd import AFD
from afd.methods.base import Batch, Prepared

# Keeps the control's draws apart from every other stream seeded by train.seed.
_STREAM = 0x43_48_41_4E


def chance_scores(n: int, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """(n,) standard-normal scores, a pure function of (seed, step, rank): a resumed run draws the
    same ones, and each rank of a data-parallel run its own."""
    mixed = ((int(seed) * 1_000_003 + int(step)) * 1_009 + int(rank)) ^ _STREAM
    g = torch.Generator().manual_seed(mixed % 2**63)
    return torch.randn(n, generator=g)


class ChanceAFD(AFD):
    name = "chance"
    uses_discriminator = False
    progress_keys = ("loss_nft",)

    def prepare(self, batch: Batch) -> Prepared:
        ids = batch.group_ids
        scores = chance_scores(ids.shape[0], self.cfg.train.seed, batch.step, dist.rank()).to(ids.device)
        adv = compute_weights(scores, ids, self.cfg.afd.advantage, gather=dist.gather_cat)
        return Prepared(weights=adv.weights, stats=adv.summary)
