"""The seam between videos and the space the student models.

The built-in student works on pixels (identity codec). A latent-space student plugs in a VAE
here: the sampler calls ``encode``/``decode`` and never looks inside.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Codec(Protocol):
    name: str

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> (B, T', C, H', W') in the model's space."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of ``encode``: model space -> (B, T, 3, H, W) in [-1, 1]."""


class PixelCodec:
    """Identity: the model works directly on pixels in [-1, 1]."""

    name = "pixel"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1)


CODECS = {"pixel": PixelCodec}


def make_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(CODECS)}")
    return CODECS[name]()
