"""Score-free DMD's settings (the ``dmd`` section), registered as method "dmd"; its class is
``afd.methods.dmd.DMD``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices
from afd.methods.registry import MethodSpec, register


@dataclass
class DMDMethodConfig:
    lambda_prior: float = 1e-4
    fake_lr: float = 1e-4  # the fake-score network and its classifier head
    critic_steps: int = 1  # fake-score / head steps per iteration
    cls_weight: float = 1.0  # classifier BCE relative to the fake score's flow-matching loss
    head_hidden: int = 128
    t_shift: float = 1.0
    weighting: Literal["x0", "velocity"] = "x0"

    def __post_init__(self):
        check_choices(self)
        if self.lambda_prior < 0 or self.fake_lr < 0 or self.critic_steps < 0 or self.cls_weight < 0:
            raise ValueError("dmd.lambda_prior, fake_lr, critic_steps and cls_weight must be >= 0")


register(MethodSpec("dmd", "afd.methods.dmd:DMD", DMDMethodConfig, "dmd", order=30))
