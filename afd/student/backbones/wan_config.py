"""The Wan student's hyperparameters (saved as JSON next to its weights; no diffusers import).

Size defaults are Wan2.1-T2V-1.3B's transformer; block layout and sampler defaults are
Self-Forcing's chunk-wise student (21 latent frames of 60x104 in blocks of 3, 4 steps at shift 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices
from afd.student.backbones.transformer_config import BlockSampler


@dataclass
class WanStudentConfig(BlockSampler):
    """A causal ``diffusers.WanTransformer3DModel`` over ``frames`` frames of
    ``channels x height x width`` in the codec's space, in blocks of ``block_frames`` frames
    (3 = Self-Forcing's chunk-wise, 1 = frame-wise)."""

    ROTARY_FRAMES = True  # frame-index RoPE: a rolling cache may keep keys as written

    # Model space (the codec's; pixels for codec "pixel").
    channels: int = 16  # the transformer's in and out channels
    height: int = 60
    width: int = 104
    frames: int = 21
    block_frames: int = 3
    # The diffusers transformer's size; inner dim = heads * head_dim.
    patch_size: tuple[int, int, int] = (1, 2, 2)
    heads: int = 12
    head_dim: int = 128
    layers: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096
    freq_dim: int = 256
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_seq_len: int = 1024  # frame, row and column positions each stay below it
    # "pixel" is the identity: channels must then be 3 (``afd.student.codec.make_codec`` checks).
    # "wan-vae": normalised latents of the AutoencoderKLWan saved in the local folder ``vae_path``
    # (``afd.student.codecs.wan_vae``); channels must then be its z_dim, and frames latent frames decode
    # to 1 + 4 (frames - 1) pixel frames at 8x height and width.
    codec: Literal["pixel", "wan-vae"] = "pixel"
    vae_path: str = ""
    fps: float = 0.0  # of the decoded clips; 0: afd's student rate (afd.video.core.STUDENT); Wan's is 16
    # The prompts' encoder (``afd.text.select``): "minilm", the built-in students' (text_dim 384),
    # or "umt5", the UMT5 encoder in the local folder ``text_encoder_path`` (text_dim = its
    # d_model, 4096 for Wan's), padding prompts to ``text_tokens`` tokens (Wan: 512; umt5 only).
    text_encoder: Literal["minilm", "umt5"] = "minilm"
    text_encoder_path: str = ""
    text_tokens: int = 512
    # The few-step sampler, with the same meaning as ``StudentConfig``'s fields.
    steps: int = 4
    shift: float = 5.0
    renoise: Literal["fresh", "ddim"] = "fresh"
    first_steps: int = 0
    guidance: float = 1.0
    first_guidance: float = 0.0
    null_prompt: str = "a video"
    project_blocks: bool = False
    window: int = 0  # streaming past ``frames``: as ``StudentConfig.window``
    sink: bool = False
    stream_cache: Literal["reencode", "roll"] = "reencode"  # as ``StudentConfig.stream_cache``

    # Every other field must be in a saved config.json: a default would silently build another
    # model. These came later, and their defaults are what a config saved before them meant.
    CHECKPOINT_MAY_OMIT = frozenset({"vae_path", "fps", "text_encoder", "text_encoder_path", "text_tokens",
                                     "window", "sink", "stream_cache"})

    def __post_init__(self):
        check_choices(self)
        for name in ("channels", "height", "width", "frames", "block_frames", "heads", "head_dim", "layers",
                     "ffn_dim", "text_dim", "freq_dim", "rope_max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.check_sampler()
        if self.codec == "wan-vae" and not self.vae_path:
            raise ValueError("codec 'wan-vae' needs vae_path: a local folder with an AutoencoderKLWan")
        if self.text_encoder == "umt5" and not self.text_encoder_path:
            raise ValueError("text_encoder 'umt5' needs text_encoder_path: a local folder with a "
                             "UMT5EncoderModel and its tokenizer")
        if self.text_tokens < 1:
            raise ValueError(f"text_tokens must be >= 1, got {self.text_tokens}")
        if self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0: the student's rate), got {self.fps}")
        pt, ph, pw = self.patch_size
        if pt != 1:
            # A temporal patch would merge frames of different blocks (or clean and noised copies).
            raise ValueError(f"patch_size must be (1, ph, pw): blocks are whole frames, got {self.patch_size}")
        if ph < 1 or pw < 1 or self.height % ph or self.width % pw:
            raise ValueError(f"patch_size {self.patch_size} must divide height {self.height} and width {self.width}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim must be even and >= 6 (RoPE splits it over frame, row and column), "
                             f"got {self.head_dim}")
        longest = max(self.frames, self.height // ph, self.width // pw)
        if longest > self.rope_max_seq_len:
            raise ValueError(f"rope_max_seq_len {self.rope_max_seq_len} is below the {longest} positions "
                             f"(frames, patch rows or columns) the model needs")

    def max_frames(self) -> int | None:
        """The longest clip the rollout can make: a rolling cache keeps every frame at its clip
        index, so the rotary table bounds it (None: any length, the window is re-indexed)."""
        return self.rope_max_seq_len if self.rolls() else None

    @property
    def dim(self) -> int:
        """Width of the transformer's token states."""
        return self.heads * self.head_dim

    @property
    def tokens_per_frame(self) -> int:
        return (self.height // self.patch_size[1]) * (self.width // self.patch_size[2])

    def video_format(self):
        """The decoded clips' format at ``fps`` (0: the student's): with the pixel codec the model
        space itself; with "wan-vae" what the VAE decodes ``frames`` latent frames to (its
        config.json is read, the VAE is not loaded)."""
        from afd.video.core import STUDENT, VideoFormat

        fps = self.fps or STUDENT.fps
        if self.codec == "wan-vae":
            from afd.student.codecs.wan_vae import CONFIG_FILE, decoded_format, read_vae_config, vae_dir

            return decoded_format(read_vae_config(self.vae_path), self.frames, self.height, self.width, fps,
                                  source=str(vae_dir(self.vae_path) / CONFIG_FILE))
        return VideoFormat(frames=self.frames, height=self.height, width=self.width, fps=fps)
