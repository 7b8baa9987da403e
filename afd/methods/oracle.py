"""AFD with the world's exact physics score in place of the discriminator: a diagnostic.

Each rollout's reward is the judge's score of it (the world judge: physical consistency, 0-100,
``afd.eval.measures.rollout_measures``, the number ``reward_fidelity`` is measured against);
the weights, the DiffusionNFT update, the prior and the EMA old policy are AFD's, unchanged. The
run breaks the black-box contract on purpose, so it is never a default; ``afd reproduce`` runs it
as a reference row (configs/train/oracle.yaml), not a baseline. It answers one question: with a
perfect ranking, how far does the update move this base under a given budget? A gain here that
AFD does not reach points at the discriminator; no gain here points at the update, its settings
or the base's spread of behaviour.
"""

from __future__ import annotations

import torch

from afd import dist
from afd.methods.advantages import AdvantageStats, compute_weights
from afd.methods.afd import AFD
from afd.methods.base import Batch, Prepared
from afd.rollout_groups import per_rollout


def oracle_weights(scores, group_ids: torch.Tensor, cfg) -> AdvantageStats:
    """The weights the oracle gives rollouts with exact ``scores`` (B,) (a judge's, e.g. physical
    consistency 0-100) in prompt groups ``group_ids`` (B,): AFD's advantage settings ``cfg.afd``
    applied to the score instead of D's logit. Also what a run's ``oracle_fidelity`` compares the
    method's weights with."""
    s = torch.as_tensor(scores, dtype=torch.float32, device=group_ids.device)
    return compute_weights(s, group_ids, cfg.afd.advantage, gather=dist.gather_cat)


class OracleAFD(AFD):
    name = "oracle"
    uses_discriminator = False
    needs_judge = True
    progress_keys = ("reward_fidelity", "rollout_pc", "loss_nft")

    def __init__(self, cfg, models, judge=None):
        if cfg.afd.advantage.reward != "logit":
            # exp of a 0-100 score overflows; the ratio reward is a discriminator-logit transform.
            raise ValueError(f"train.method=oracle needs afd.advantage.reward=logit, got "
                             f"{cfg.afd.advantage.reward!r}")
        super().__init__(cfg, models, judge)

    def prepare(self, batch: Batch) -> Prepared:
        prompts = per_rollout(batch.prompts, self.cfg.train.rollouts)
        batch.measures = self.judge.measure(batch.rollouts, prompts)
        adv = oracle_weights(batch.measures[self.judge.score], batch.group_ids, self.cfg)
        return Prepared(weights=adv.weights, stats=adv.summary)
