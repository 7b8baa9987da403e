"""SFT's settings (the ``sft`` section), registered as method "sft"; its class is ``afd.methods.sft.SFT``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices
from afd.methods.registry import MethodSpec, register


@dataclass
class SFTMethodConfig:
    lambda_prior: float = 0.0  # unweighted prior toward the frozen initial student (0: off)
    t_shift: float = 1.0
    weighting: Literal["x0", "velocity"] = "x0"  # as pretraining: "x0" (t^2-weighted velocity error) or "velocity"

    def __post_init__(self):
        check_choices(self)
        if self.lambda_prior < 0:
            raise ValueError(f"lambda_prior must be >= 0, got {self.lambda_prior}")


register(MethodSpec("sft", "afd.methods.sft:SFT", SFTMethodConfig, "sft", order=10))
