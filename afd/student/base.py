"""The student as the trainer sees it: a backbone, a codec, a text encoder and a device.

Everything downstream (the one rollout, the losses, the methods, LoRA, checkpoints, evaluation)
uses a student only through ``StudentModel`` (the backbone's few methods) and ``Student`` (the
bundle). afd's ``CausalVideoTransformer`` is one backbone; the pixel and state students are that
backbone with the pixel or the state codec. Another backbone registers its ``format`` tag (the
``format`` field of a saved ``config.json``) in ``afd.student.formats.STUDENT_FORMATS`` and implements the protocol.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from afd.student.formats import STUDENT_FORMATS

if TYPE_CHECKING:
    import torch

    from afd.student.cache import KVCache
    from afd.student.codec import Codec
    from afd.text.encoder import TextEncoding
    from afd.video.core import VideoFormat

class StudentModel(Protocol):
    """A causal block-wise flow-matching backbone (an ``nn.Module``).

    ``config`` gives at least: ``frames``, ``block_frames``, ``n_blocks``, ``channels``,
    ``height``, ``width`` (the model space), ``text_dim``, ``sampler_levels()``,
    ``video_format()``, the streaming rule (``window``, ``sink``, ``stream_cache``,
    ``context_window()``, ``rolls()``, ``max_frames()``; ``BlockSampler`` gives them), and the
    sampler fields (``steps``, ``shift``, ``renoise``, ``guidance``, ``first_guidance``,
    ``null_prompt``, ``project_blocks``, ``codec``)."""

    config: Any

    def __call__(self, x: torch.Tensor, t: torch.Tensor, text: TextEncoding, cache: KVCache | None = None, *,
                 clean: bool = False) -> tuple[torch.Tensor, KVCache | None]:
        """Frames following the cached ones: x (B, T, C, H, W), t (B, T) in [0, 1] -> raw prediction, cache."""

    def forward_train(self, x_clean: torch.Tensor, x_noised: torch.Tensor, t: torch.Tensor, text: TextEncoding,
                      *, return_features: bool = False):
        """Teacher-forced ``[clean | noised]`` view of whole clips -> raw prediction of the noised frames."""

    def forward_noised_context(self, x_noised: torch.Tensor, t: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        """The whole noised clip, block-causal among its own blocks (Astrolabe's training view)."""

    def forward_with_prefix(self, prefix: torch.Tensor | None, x_noised: torch.Tensor, t: torch.Tensor,
                            text: TextEncoding) -> torch.Tensor:
        """Cache-free view: a clean prefix and the noised frames after it, in one pass."""

    def to_x0(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean-sample estimate of a raw prediction."""

    def to_velocity(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The flow velocity (eps - x0) of a raw prediction."""

    def lora_target_modules(self) -> list[str]:
        """Names of the linear maps LoRA adapts (``afd.student.lora``)."""

    def repeated_blocks(self) -> list[torch.nn.Module]:
        """The transformer blocks, called as modules by the forward: the units of FSDP2 sharding
        and activation checkpointing (``afd.train.parallel``)."""

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """safetensors weights + JSON config (with its ``format`` tag)."""


class ReferenceModel(Protocol):
    """The frozen reference of the prior term: a frozen copy of the initial student, or the LoRA
    student with its adapters off (``afd.student.lora.AdaptersOff``)."""

    config: Any

    def forward_train(self, x_clean, x_noised, t, text, *, return_features: bool = False): ...

    def forward_noised_context(self, x_noised, t, text): ...

    def to_velocity(self, raw, x_t, t): ...

    def to_x0(self, raw, x_t, t): ...


def student_format(directory: str | Path) -> str:
    """The ``format`` tag of a saved student folder (an error naming the file if it has none)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected a student saved with save_pretrained)")
    try:
        tag = json.loads(path.read_text()).get("format")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a JSON object ({e})") from None
    if tag not in STUDENT_FORMATS:
        raise ValueError(f"{path}: format {tag!r} is not a known student; known: {', '.join(STUDENT_FORMATS)}")
    return tag


def load_student_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> StudentModel:
    """A shipped name (``checkpoints/NAME``) or ``save_pretrained`` folder -> its backbone, in eval
    mode, on ``device``. Never unpickles."""
    from afd.student.shipped import resolve_checkpoint

    directory = resolve_checkpoint(str(checkpoint))
    tag = student_format(directory)
    module, cls = STUDENT_FORMATS[tag].split(":")
    try:
        backbone = getattr(importlib.import_module(module), cls)
    except ImportError as e:  # a missing optional dependency, named by the backbone's module
        raise ValueError(f"{Path(directory) / 'config.json'}: cannot load a {tag!r} student: {e}") from None
    return backbone.from_pretrained(directory).to(device)


@dataclass
class Student:
    """A backbone with what it needs to turn prompts into clips: its codec (model space <->
    pixels), its text encoder and its device."""

    model: StudentModel
    codec: Codec
    text: Any  # afd.text.encoder.CachedTextEncoder: encode(prompts) -> TextEncoding, dim
    device: torch.device

    @classmethod
    def wrap(cls, model: StudentModel, codec: Codec | None = None) -> "Student":
        """The bundle of a loaded backbone: ``codec`` (default: its config's), the text encoder
        its config names (``afd.text.select``; MiniLM unless it says otherwise), its device."""
        from afd.device import device_of
        from afd.student.codec import make_codec
        from afd.text.select import text_encoder_for

        encoder = text_encoder_for(model.config)
        if model.config.text_dim != encoder.dim:
            raise ValueError(f"the student reads {model.config.text_dim}-dim text but the encoder "
                             f"{encoder.name} gives {encoder.dim}")
        return cls(model, codec if codec is not None else make_codec(model.config), encoder, device_of(model))

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> "Student":
        return cls.wrap(load_student_model(checkpoint, device))

    @property
    def fmt(self) -> VideoFormat:
        """The pixel format of the student's decoded clips (what teacher clips are adapted to)."""
        return self.codec.fmt

    def encode_text(self, prompts: list[str]) -> TextEncoding:
        """The prompts' encodings on the student's device."""
        return self.text.encode(prompts).to(self.device)
