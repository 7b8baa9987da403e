"""The seam between videos and the space the student models.

The pixel student works on pixels (identity codec); the state student on each frame's object
state (``afd.student.state_codec``); the latent student on the latents of a learned frame
autoencoder (``afd.student.frame_codec``); the latent Wan student on normalised Wan VAE latents
(``afd.student.wan_vae``). The sampler
and the trainer call ``encode`` / ``decode`` / ``project`` and never look inside.
"""

from __future__ import annotations

from typing import Protocol

import torch

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

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1)

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.clamp(-1, 1)


CODECS = ("pixel", "state", "learned", "wan-vae")


def make_codec(config) -> Codec:
    """The codec of a student config (``afd.student.config.StudentConfig``), with its ``fmt``."""
    if config.codec == "pixel":
        if config.channels != 3:
            raise ValueError(f"codec 'pixel' decodes RGB frames as they are, but the student models "
                             f"{config.channels} channels (a latent student needs a latent codec)")
        codec = PixelCodec()
    elif config.codec == "state":
        from afd.student.state_codec import StateCodec

        codec = StateCodec(config.video_size)
    elif config.codec == "learned":
        from afd.student.frame_codec import LearnedCodec, load_frame_codec

        model = load_frame_codec(config.codec_path)
        want = (config.channels, config.height, config.width)
        if model.config.latent_shape != want or model.config.size != config.video_size:
            raise ValueError(f"codec_path {config.codec_path!r}: the codec maps {model.config.size}x{model.config.size} "
                             f"frames to latents {model.config.latent_shape}, but the student models {want} latents "
                             f"decoded to video_size {config.video_size}")
        codec = LearnedCodec(model)
    elif config.codec == "wan-vae":
        from afd.student.wan_vae import WanVAECodec, load_vae

        codec = WanVAECodec(load_vae(config.vae_path))
        if config.channels != codec.channels:
            raise ValueError(f"codec 'wan-vae' ({config.vae_path}) gives {codec.channels}-channel latents, but "
                             f"the student models {config.channels} channels")
    else:
        raise ValueError(f"unknown codec {config.codec!r}; available: {', '.join(CODECS)}")
    codec.fmt = config.video_format()
    return codec
