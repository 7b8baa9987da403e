"""AFD's settings (the ``afd`` section of a run's config), registered as method "afd"; its class
is ``afd.methods.afd.AFD``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from afd.config import check_choices
from afd.methods.advantage_config import AdvantageConfig
from afd.methods.registry import MethodSpec, register


@dataclass
class AFDMethodConfig:
    beta: float = 1.0  # NFT mixing / inverse step size (paper 0.1; see configs/train/afd.yaml)
    lambda_prior: float = 1e-4  # weight of the w-weighted prior term toward the frozen initial student
    nft_space: Literal["velocity", "x0"] = "velocity"  # "velocity" (paper Eq. 4) or "x0" (normalised, reference code)
    t_shift: float = 1.0  # shift of the NFT training timesteps (timesteps=uniform)
    # "uniform": each block's t ~ U[0.02, 1] (shifted by t_shift), the paper's Algorithm 1;
    # "sampler": each rollout is trained once at every level of the student's own sampler (n
    # copies per step, afd.methods.nft.sampler_timesteps), the DiffusionNFT reference's choice.
    # "minibatch": one of the sampler's levels for the whole batch, every block (Astrolabe's: one t
    # per minibatch from {1, .75, .5, .25} before the sampler's shift).
    timesteps: Literal["uniform", "sampler", "minibatch"] = "uniform"
    # What a noised block attends to in the NFT loss. "clean": the rollout's own clean blocks < k,
    # as the sampler showed it (the paper); "noised": the whole noised clip under the block-causal
    # mask, context noised at the same levels (Astrolabe's training view). update=nft only.
    context: Literal["clean", "noised"] = "clean"
    # "none": L_NFT as in Eq. 4; "reference": times a_max / beta, as the DiffusionNFT reference
    # scales its policy loss (a larger effective step under the same optimizer and grad clip).
    loss_scale: Literal["none", "reference"] = "none"
    # "conditional": train the prompt-conditional velocity (the paper); "sampler": train the
    # velocity the student's sampler uses, classifier-free guidance included, so that a guided
    # data-collecting policy is the policy being trained (same as "conditional" at guidance 1).
    guidance: Literal["conditional", "sampler"] = "conditional"
    # "all": L_NFT on every block; "first": on block 0 only. A diagnostic of credit assignment in
    # an AR student: a later block is trained under its rollout's own context, which already fixes
    # much of that rollout's physics, so a clip-level weight mostly says "continue (or do not
    # continue) this context" there (docs/recipe.md).
    nft_blocks: Literal["all", "first"] = "all"
    # "sample": every rollout gets its own forward noise (the paper, the reference); "group": the
    # rollouts of one prompt share eps and levels, so the noise-only part of their NFT gradients
    # cancels against the group's zero-sum weights (common random numbers; docs/recipe.md).
    noise: Literal["sample", "group"] = "sample"
    # The student update the weights drive. "nft": the paper's DiffusionNFT on forward-noised
    # rollouts (afd.methods.nft), what "AFD (paper)" means in every report. "reward-filtered":
    # SFT's own loss on each prompt's ``top_k`` rollouts by weight (on-policy rejection-sampling
    # fine-tuning, afd.methods.filtered), plus the unweighted prior: every kept rollout is its own
    # target, so credit is per rollout rather than one shift per prompt. "sampler-states": NFT's
    # signed x0-space regression at the states the rollout's sampler visited, toward the rollout's
    # own clip; "policy-gradient": a clipped likelihood-ratio update on the sampler's Gaussian
    # re-noising transitions with a KL term to the initial student, as in Flow-GRPO (both in
    # afd.methods.sampler_updates).
    update: Literal["nft", "reward-filtered", "sampler-states", "policy-gradient"] = "nft"
    top_k: int = 1  # reward-filtered: rollouts kept per prompt
    pg_clip: float = 1e-4  # policy-gradient: the ratio clip (Flow-GRPO's SD3 setting)
    kl_beta: float = 0.04  # policy-gradient: weight of the per-transition KL to the initial student (Flow-GRPO's)
    # Prefix groups: each iteration draws one branch block b; a prompt's G rollouts share their
    # blocks < b bit for bit (one trunk, continued G times), so their weights, centred within the
    # group, credit the blocks from b on, which alone are trained (afd.methods.afd). Any update.
    prefix_groups: bool = False
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)

    def __post_init__(self):
        check_choices(self)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.lambda_prior < 0:
            raise ValueError(f"lambda_prior must be >= 0, got {self.lambda_prior}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.pg_clip > 0 or self.kl_beta < 0:
            raise ValueError(f"pg_clip must be > 0 and kl_beta >= 0, got {self.pg_clip}, {self.kl_beta}")
        if self.context == "noised" and self.update != "nft":
            raise ValueError(f"context=noised is an option of the paper's NFT (update=nft), got update={self.update}")
        if self.prefix_groups and self.nft_blocks == "first":
            raise ValueError("prefix_groups trains the blocks after each group's shared prefix; "
                             "nft_blocks=first trains block 0 only: use one of them")


register(MethodSpec("afd", "afd.methods.afd:AFD", AFDMethodConfig, "afd", order=40))
