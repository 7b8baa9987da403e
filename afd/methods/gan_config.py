"""GAN's settings (the ``gan`` section), registered as method "gan"; its class is ``afd.methods.gan.GAN``."""

from __future__ import annotations

from dataclasses import dataclass

from afd.methods.registry import MethodSpec, register


@dataclass
class GANMethodConfig:
    lambda_prior: float = 1e-4  # as AFD's, unweighted

    def __post_init__(self):
        if self.lambda_prior < 0:
            raise ValueError(f"lambda_prior must be >= 0, got {self.lambda_prior}")


register(MethodSpec("gan", "afd.methods.gan:GAN", GANMethodConfig, "gan", order=20))
