"""A learned frame codec: a small convolutional autoencoder over world frames (docs/latent-student.md).

It plays the part a VAE plays for a real AR video student: the student models its latents, the
decoder draws them, and GAN/DMD backpropagate through the decoder. Frames are coded one by one
(no temporal compression), so a clip of T frames is T latent frames and the student's block
layout is the pixel student's.

- **Encoder**: 3x3 convolutions over the frame and two coordinate channels (CoordConv: the
  position of an edge is read against absolute coordinates, not inferred from padding), halving
  the side down to ``max(latent_size, 4)``, then a linear map to ``latent_channels x latent_size
  x latent_size``. Each frame's raw code is scaled to unit RMS, then normalised per channel with
  the mean and standard deviation measured on training frames (``set_normalisation``), so the
  student sees latents of about unit scale, as Wan's pipelines normalise Wan VAE latents.
- **Decoder**: a spatial-broadcast decoder. The latent's first linear layer is applied at the
  latent resolution and bilinearly upsampled to the frame (the same as upsampling first, since
  both are linear), the coordinates' own linear layer is added, and a per-pixel MLP draws the
  colour. With ``latent_size`` 1 every pixel reads the same code, so the decoder draws from one
  frame-wide description and has no seams between tokens to duplicate an object across.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from afd.config import config_from_dict, config_to_dict

FORMAT = "afd-frame-codec"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STD_FLOOR = 0.05  # a channel the codec barely uses is not blown up to unit scale
# The decoder reads coordinates and codes multiplied by this (times size / 32): a one-pixel edge
# then needs first-layer weights of order 1, which Adam reaches in hundreds of steps, where unit
# inputs would need weights of order size and thousands of steps at the same learning rate.
INPUT_GAIN = 8.0


@dataclass
class FrameCodecConfig:
    """Shape of the frame autoencoder: ``size``-pixel square RGB frames <-> ``latent_channels x
    latent_size x latent_size`` latents."""

    size: int = 32
    latent_size: int = 1
    latent_channels: int = 12
    width: int = 64  # hidden channels of both halves
    decoder_depth: int = 4  # hidden layers of the per-pixel MLP

    def __post_init__(self):
        if self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {self.size}")
        if self.latent_size < 1 or self.size % self.latent_size or self.latent_size & (self.latent_size - 1):
            raise ValueError(f"latent_size must be a power of two dividing size {self.size}, got {self.latent_size}")
        if self.latent_channels < 1 or self.width < 1 or self.decoder_depth < 1:
            raise ValueError(f"latent_channels, width and decoder_depth must be >= 1, got {self.latent_channels}, "
                             f"{self.width}, {self.decoder_depth}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)


def _coords(size: int, device, dtype) -> torch.Tensor:
    """(2, size, size): pixel-centre x and y in [-1, 1]."""
    c = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y])


class FrameAutoencoder(nn.Module):
    """Frames (N, 3, size, size) in [-1, 1] <-> normalised latents (N, C, L, L)."""

    def __init__(self, config: FrameCodecConfig):
        super().__init__()
        self.config = cfg = config
        w = cfg.width
        convs, side = [nn.Conv2d(5, w, 3, padding=1)], cfg.size
        while side > max(cfg.latent_size, 4):
            convs.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            side //= 2
        self.enc_convs = nn.ModuleList(convs)
        self.enc_out = nn.Linear(w * side * side, cfg.latent_channels * cfg.latent_size ** 2)
        self.dec_latent = nn.Linear(cfg.latent_channels, w)
        self.dec_coords = nn.Linear(2, w, bias=False)
        self.dec_mlp = nn.ModuleList(nn.Linear(w, w) for _ in range(cfg.decoder_depth - 1))
        self.dec_out = nn.Linear(w, 3)
        # Per-channel normalisation of the unit-RMS codes (identity until set_normalisation).
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    # ----- the two halves -----
    def encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> unit-RMS codes (N, C, L, L), before normalisation."""
        cfg = self.config
        n = frames.shape[0]
        h = torch.cat([frames, _coords(cfg.size, frames.device, frames.dtype).expand(n, -1, -1, -1)], 1)
        for conv in self.enc_convs:
            h = F.gelu(conv(h))
        z = self.enc_out(h.flatten(1)).view(n, *cfg.latent_shape)
        return z * torch.rsqrt(z.pow(2).mean((1, 2, 3), keepdim=True) + 1e-6)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> normalised latents (N, C, L, L)."""
        return self.normalise(self.encode_raw(frames))

    def decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Unit-RMS codes (N, C, L, L) -> frames (N, 3, S, S), unclamped (about [-1, 1])."""
        cfg = self.config
        gain = INPUT_GAIN * cfg.size / 32
        h = self.dec_latent(gain * raw.movedim(1, -1)).movedim(-1, 1)  # (N, w, L, L)
        h = F.interpolate(h, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False) \
            if cfg.latent_size > 1 else h.expand(-1, -1, cfg.size, cfg.size)
        h = h.movedim(1, -1) + self.dec_coords(gain * _coords(cfg.size, raw.device, raw.dtype).movedim(0, -1))
        h = F.gelu(h)
        for layer in self.dec_mlp:
            h = F.gelu(layer(h))
        return self.dec_out(h).movedim(-1, 1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latents (N, C, L, L) -> frames (N, 3, S, S), unclamped; differentiable."""
        return self.decode_raw(latent * self.latent_std[:, None, None] + self.latent_mean[:, None, None])

    @torch.no_grad()
    def set_normalisation(self, raw: torch.Tensor) -> None:
        """Measure the per-channel mean and std (floored at STD_FLOOR) on raw codes (N, C, L, L)."""
        self.latent_mean.copy_(raw.float().mean((0, 2, 3)))
        self.latent_std.copy_(raw.float().std((0, 2, 3)).clamp_min(STD_FLOOR))

    # ----- persistence -----
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """``model.safetensors`` + ``config.json`` (format tag, config, ``extra``), each atomically."""
        from afd.io_utils import atomic_write_text, save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic({k: v.detach().float() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE)
        meta = {"format": FORMAT, "config": config_to_dict(self.config), "extra": extra or {}}
        atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> FrameAutoencoder:
        """Load a codec written by ``save_pretrained``, strictly, frozen, in eval mode (never unpickles)."""
        from afd.io_utils import load_safetensors_checked, read_pretrained_meta

        directory = Path(directory)
        meta = read_pretrained_meta(directory, FORMAT, "codec checkpoint", CONFIG_FILE)
        model = cls(config_from_dict(FrameCodecConfig, meta["config"], source=str(directory / CONFIG_FILE)))
        load_safetensors_checked(model, directory / WEIGHTS_FILE)
        return model.eval().requires_grad_(False)


_LOADED: dict[Path, FrameAutoencoder] = {}


def resolve_codec(spec: str | Path) -> Path:
    """A codec folder: ``spec`` itself if it is a directory, else a shipped name (``checkpoints/NAME``)."""
    from afd.student.shipped import find_shipped, shipped_names

    path = Path(spec)
    if path.is_dir():
        return path
    found = find_shipped(str(spec)) if spec else None
    if found is not None:
        return found
    names = ", ".join(shipped_names(frozenset({FORMAT}))) or "none found"
    raise FileNotFoundError(f"{spec!r}: no such codec directory (shipped codecs: {names})")


def load_frame_codec(spec: str | Path) -> FrameAutoencoder:
    """The frozen codec of ``spec`` (a folder or a shipped name), loaded once per folder."""
    path = resolve_codec(spec).resolve()
    if path not in _LOADED:
        _LOADED[path] = FrameAutoencoder.from_pretrained(path)
    return _LOADED[path]


class LearnedCodec:
    """The ``Codec`` of a latent student: clips (B, T, 3, S, S) in [-1, 1] <-> latents (B, T, C, L, L).

    Frames are coded independently. The codec's weights stay in float32 on the device of the
    tensors it is given; ``project`` is the identity (a latent has no clamps of its own: the
    decoder draws any latent, and ``decode`` clamps the pixels)."""

    @classmethod
    def for_student(cls, config) -> LearnedCodec:
        """The frozen codec of ``config.codec_path``, checked against the student's latent shape."""
        model = load_frame_codec(config.codec_path)
        want = (config.channels, config.height, config.width)
        if model.config.latent_shape != want or model.config.size != config.video_size:
            raise ValueError(f"codec_path {config.codec_path!r}: "
                             f"the codec maps {model.config.size}x{model.config.size} "
                             f"frames to latents {model.config.latent_shape}, but the student models {want} latents "
                             f"decoded to video_size {config.video_size}")
        return cls(model)

    name = "learned"

    def __init__(self, model: FrameAutoencoder):
        self.model = model
        self.channels = model.config.latent_channels

    def _on(self, x: torch.Tensor) -> FrameAutoencoder:
        p = next(self.model.parameters())
        if p.device != x.device:
            self.model.to(x.device)
        return self.model

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        size = self.model.config.size
        if video.dim() != 5 or tuple(video.shape[2:]) != (3, size, size):
            raise ValueError(f"the learned codec encodes clips (B, T, 3, {size}, {size}), got {tuple(video.shape)}")
        b, t = video.shape[:2]
        # float32 even under a caller's bf16 autocast: a tenth of a pixel is a small difference
        with torch.no_grad(), torch.autocast(video.device.type, enabled=False):
            z = self._on(video).encode(video.flatten(0, 1).float())
        return z.view(b, t, *z.shape[1:])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        shape = self.model.config.latent_shape
        if latent.dim() != 5 or tuple(latent.shape[2:]) != shape:
            raise ValueError(f"the learned codec decodes latents (B, T, {', '.join(map(str, shape))}), "
                             f"got {tuple(latent.shape)}")
        b, t = latent.shape[:2]
        with torch.autocast(latent.device.type, enabled=False):
            x = self._on(latent).decode(latent.flatten(0, 1).float())
        return x.view(b, t, *x.shape[1:]).clamp(-1, 1)

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        return latent
