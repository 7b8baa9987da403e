"""The Wan VAE behind the codec seam: pixels <-> normalised Wan latents.

A latent student (codec "wan-vae") models clips of ``1 + k`` latent frames of ``z_dim`` channels
at 1/8 of the pixel size; ``AutoencoderKLWan`` maps ``1 + 4k`` pixel frames to them (the first
frame alone, then 4 frames per latent frame). Latents are normalised per channel with the VAE
config's ``latents_mean`` / ``latents_std``, as Wan's pipelines feed them to the transformer.

The VAE comes from a local directory (``AutoencoderKLWan.save_pretrained``'s, or a diffusers Wan
pipeline's with a ``vae/`` subfolder), is frozen, and is loaded once per directory. diffusers is
imported only when a VAE is loaded, so reading a VAE's compression needs only its config.json.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from afd.video.core import VideoFormat

CONFIG_FILE = "config.json"
CHUNK_FRAMES = 4  # diffusers' Wan encoder reads frames 1 + 4i .. 4 + 4i per latent frame


def vae_dir(path: str | Path) -> Path:
    """The folder holding the VAE's config.json: ``path`` itself or its ``vae/`` subfolder."""
    path = Path(path)
    if (path / "vae" / CONFIG_FILE).is_file() and not (path / CONFIG_FILE).is_file():
        return path / "vae"
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path / CONFIG_FILE}: missing (expected a Wan VAE saved with save_pretrained)")
    return path


def read_vae_config(path: str | Path) -> dict:
    """The VAE's config.json as a dict (an error naming the file if it is not a JSON object)."""
    file = vae_dir(path) / CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(config).__name__}")
    return config


def vae_compression(config: dict, source: str = "the VAE config") -> tuple[int, int]:
    """(temporal, spatial) compression of a Wan VAE config: latent frame f >= 1 covers
    ``temporal`` pixel frames, and a latent pixel ``spatial x spatial`` pixels."""
    for key in ("temperal_downsample", "dim_mult", "z_dim"):
        if key not in config:
            raise ValueError(f"{source}: missing {key!r} (expected an AutoencoderKLWan config)")
    if config.get("patch_size") is not None:
        raise ValueError(f"{source}: patch_size {config['patch_size']!r} (a patchified Wan2.2 VAE) is not "
                         f"supported; expected null (Wan2.1's VAE)")
    temporal = 2 ** sum(bool(d) for d in config["temperal_downsample"])
    if temporal != CHUNK_FRAMES:
        raise ValueError(f"{source}: temperal_downsample {config['temperal_downsample']} compresses time by "
                         f"{temporal}; diffusers' Wan VAE encodes chunks of {CHUNK_FRAMES} frames (two True entries)")
    return temporal, 2 ** (len(config["dim_mult"]) - 1)


def decoded_format(config: dict, latent_frames: int, height: int, width: int, fps: float,
                   source: str = "the VAE config") -> VideoFormat:
    """The pixel format that ``latent_frames`` latent frames of ``height x width`` decode to."""
    temporal, spatial = vae_compression(config, source)
    return VideoFormat(frames=1 + temporal * (latent_frames - 1), height=height * spatial,
                       width=width * spatial, fps=fps)


_VAES: dict[str, torch.nn.Module] = {}
_LOCK = threading.Lock()


def load_vae(path: str | Path) -> torch.nn.Module:
    """The frozen ``AutoencoderKLWan`` of a local directory, float32, eval mode (loaded once)."""
    directory = vae_dir(path)
    key = str(directory.resolve())
    with _LOCK:
        if key not in _VAES:
            try:
                from diffusers import AutoencoderKLWan
            except ImportError as e:
                raise ValueError(f"codec 'wan-vae' needs diffusers, which is not installed ({e}): "
                                 f"pip install 'afd[wan]'") from None
            vae_compression(read_vae_config(directory), str(directory / CONFIG_FILE))
            # Loading a frozen codec must not move the training's random stream.
            with torch.random.fork_rng(devices=[]):
                try:
                    vae = AutoencoderKLWan.from_pretrained(directory, local_files_only=True, torch_dtype=torch.float32)
                except (OSError, ValueError) as e:
                    raise ValueError(f"{directory}: cannot load a Wan VAE ({e})") from None
            _VAES[key] = vae.eval().requires_grad_(False)
        return _VAES[key]


class WanVAECodec:
    """Codec over a frozen ``AutoencoderKLWan``; model space = normalised latents (see module docstring).

    ``fmt`` (the decoded clips' format) is set by ``afd.student.codec.make_codec``."""

    name = "wan-vae"

    @classmethod
    def for_student(cls, config) -> WanVAECodec:
        """The codec over ``config.vae_path``'s VAE, checked against the student's channels."""
        codec = cls(load_vae(config.vae_path))
        if config.channels != codec.channels:
            raise ValueError(f"codec 'wan-vae' ({config.vae_path}) gives {codec.channels}-channel latents, but "
                             f"the student models {config.channels} channels")
        return codec

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae
        c = vae.config
        if len(c.latents_mean) != c.z_dim or len(c.latents_std) != c.z_dim:
            raise ValueError(f"the Wan VAE's latents_mean / latents_std have {len(c.latents_mean)} / "
                             f"{len(c.latents_std)} entries; expected z_dim = {c.z_dim}")
        self.channels = int(c.z_dim)
        self.temporal, self.spatial = vae_compression(dict(c))
        self.mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(c.latents_std, dtype=torch.float32).view(1, 1, -1, 1, 1)

    def _vae_on(self, x: torch.Tensor) -> torch.nn.Module:
        # The VAE follows the tensors it is given (the student's device), like the pixel codec.
        if next(self.vae.parameters()).device != x.device:
            self.vae.to(x.device)
        return self.vae

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents (B, T', C, h, w) -> model space ``(z - mean) / std`` per channel."""
        return (z - self.mean.to(z.device)) / self.std.to(z.device)

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of ``normalise``: ``latent * std + mean`` per channel."""
        return latent * self.std.to(latent.device) + self.mean.to(latent.device)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 1 + 4k, 3, H, W) in [-1, 1] -> normalised latents (B, 1 + k, C, H / 8, W / 8) float32
        (the posterior's mean: deterministic)."""
        s = self.spatial
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"codec 'wan-vae' encodes (B, T, 3, H, W) clips, got {tuple(video.shape)}")
        T, H, W = video.shape[1], video.shape[3], video.shape[4]
        if (T - 1) % self.temporal:
            raise ValueError(f"codec 'wan-vae' encodes 1 + {self.temporal}k frames; got {T} frames "
                             f"(nearest: {1 + self.temporal * ((T - 1) // self.temporal)})")
        if H % s or W % s:
            raise ValueError(f"codec 'wan-vae' encodes frames whose height and width are multiples of {s}; "
                             f"got {H}x{W}")
        vae = self._vae_on(video)
        z = vae.encode(video.transpose(1, 2).to(vae.dtype)).latent_dist.mode()
        return self.normalise(z.transpose(1, 2).float())

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, F, C, h, w) -> pixels (B, 1 + 4(F - 1), 3, 8h, 8w) in [-1, 1] float32.

        The whole clip in one call: diffusers' decode resets its causal cache per call, so
        decoding blocks separately would restart the temporal context at every block.
        Differentiable in ``latent`` (the VAE's weights stay frozen)."""
        if latent.dim() != 5 or latent.shape[2] != self.channels:
            raise ValueError(f"codec 'wan-vae' decodes (B, F, {self.channels}, h, w) latents, "
                             f"got {tuple(latent.shape)}")
        vae = self._vae_on(latent)
        x = vae.decode(self.denormalise(latent.float()).transpose(1, 2).to(vae.dtype)).sample
        return x.transpose(1, 2).float().clamp(-1, 1)

    def project(self, latent: torch.Tensor) -> torch.Tensor:
        """Identity: decode's only clamp acts on pixels and has no counterpart on the latents."""
        return latent
