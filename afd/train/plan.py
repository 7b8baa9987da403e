"""What each iteration draws, as pure functions of (train.seed, iteration): exact resume.

Every random draw of iteration i comes from a CPU generator seeded by (seed, i, stream), and the
global torch RNG is reseeded from (seed, i, GLOBAL) when the iteration starts, so a checkpoint at
an iteration boundary determines the rest of the run. Adding a stream never shifts another.
CPU generators also make the draws the same on every device.
"""

from __future__ import annotations

import numpy as np
import torch

from afd import dist

# Streams of per-iteration randomness.
PLAN, DISC, STUDENT_STEP, GLOBAL, CRITIC, RERENDER, BRANCH, DISC_WINDOW = 0, 1, 2, 3, 4, 5, 6, 7


def seed_of(*parts: int) -> int:
    """A 63-bit seed from integers (order matters)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by ``seed_of(*parts)``."""
    return torch.Generator().manual_seed(seed_of(*parts))


class Plan:
    """What iteration ``it`` asks for, globally: P prompts of the pool, the teacher clip id of
    each (< ``clips_per_prompt``), and G rollout seeds per prompt."""

    def __init__(self, seed: int, it: int, pool: list[str], prompts: int, clips_per_prompt: int, rollouts: int):
        rng = np.random.default_rng(seed_of(seed, it, PLAN))
        idx = rng.choice(len(pool), prompts, replace=False)
        self.prompts = [pool[i] for i in idx]
        self.clip_ids = [int(k) for k in rng.integers(0, clips_per_prompt, len(idx))]
        self.seeds = [[int(s) for s in rng.integers(0, 2**31 - 1, rollouts)] for _ in idx]

    @classmethod
    def for_config(cls, cfg, it: int, pool: list[str]) -> "Plan":
        """The plan of an ``AdaptConfig``'s iteration ``it``."""
        return cls(cfg.train.seed, it, pool, cfg.train.prompts, cfg.teacher.clips_per_prompt, cfg.train.rollouts)

    @staticmethod
    def branch_block(seed: int, it: int, n_blocks: int) -> int:
        """Prefix groups: the block at which iteration ``it``'s rollouts of a prompt branch, uniform
        in [0, n_blocks) (0: no shared prefix)."""
        return int(torch.randint(n_blocks, (1,), generator=generator(seed, it, BRANCH)))

    def local(self) -> tuple[list[str], list[int], list[list[int]]]:
        """This rank's contiguous share of the prompts, with their clip ids and seeds (``afd.dist.shard``)."""
        return dist.shard(self.prompts), dist.shard(self.clip_ids), dist.shard(self.seeds)
