"""The seam between videos and the space the student models.

The pixel student works on pixels (identity codec); the state student on each frame's object
state (``afd.world.state_codec``, the testbed's); the latent student on the latents of a learned frame
autoencoder (``afd.student.codecs.learned``); the latent Wan student on normalised Wan VAE latents
(``afd.student.codecs.wan_vae``). The sampler
and the trainer call ``encode`` / ``decode`` / ``project`` and never look inside.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch

from afd.student.formats import CODECS
from afd.video.core import VideoFormat


class Codec(Protocol):
    name: str
    fmt: VideoFormat  # the decoded clips' pixel format: what teacher clips are adapted to

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> (B, T', C, H', W') in the model's space."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of ``encode``: model space -> (B, T, 3, H, W) in [-1, 1]."""

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent ``decode`` actually draws (its clamps applied), in the model's space."""


class PixelCodec:
    """Identity: the model works directly on pixels in [-1, 1]."""

    name = "pixel"

    @classmethod
    def for_student(cls, config) -> PixelCodec:
        if config.channels != 3:
            raise ValueError(f"codec 'pixel' decodes RGB frames as they are, but the student models "
                             f"{config.channels} channels (a latent student needs a latent codec)")
        return cls()

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1)

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1)


def codec_class(name: str) -> type:
    """The codec class registered as ``name`` (a ValueError naming the registered ones otherwise)."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(CODECS)}")
    module, cls = CODECS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_codec(config) -> Codec:
    """The codec of a student config (``StudentConfig`` or ``WanStudentConfig``), with its ``fmt``."""
    codec = codec_class(config.codec).for_student(config)
    codec.fmt = config.video_format()
    return codec
