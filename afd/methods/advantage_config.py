"""The advantage settings (``afd.advantage``), apart from the torch code that uses them
(``afd.methods.advantages``), so that reading a config never imports torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices


@dataclass
class AdvantageConfig:
    """``reward``: "logit" (r = s) or "ratio" (r = exp(s)); ``a_max``: advantage clip (Table 3:
    5.0), also the scale mapping A to w; ``std_eps``: added to the global std (1e-4);
    ``std_over``: what the global std is taken over (see below)."""

    reward: Literal["logit", "ratio"] = "logit"
    a_max: float = 5.0
    std_eps: float = 1e-4
    # "rewards": the std of all rewards of the global batch (docs/method.md section 5, the default).
    # "residuals": the std of r - b over the global batch. With a Bradley-Terry discriminator
    # each prompt's scores carry an arbitrary offset (Eq. 1 only sees within-prompt differences),
    # which inflates the std of raw rewards and squeezes every weight toward 0.5; the residual
    # std removes those offsets (an afd option; measured with the oracle in reports/recipe/report.md).
    std_over: Literal["rewards", "residuals"] = "rewards"

    def __post_init__(self):
        check_choices(self)
        if not (math.isfinite(self.a_max) and self.a_max > 0):
            raise ValueError(f"a_max must be a positive finite number, got {self.a_max}")
        # std_eps > 0 keeps A defined (0 / eps = 0) when every reward in the batch is equal.
        if not (math.isfinite(self.std_eps) and self.std_eps > 0):
            raise ValueError(f"std_eps must be a positive finite number, got {self.std_eps}")
