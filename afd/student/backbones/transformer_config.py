"""The student's architecture hyperparameters (saved as JSON next to its weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices


class BlockSampler:
    """What every student config shares with the rollout and the losses, whatever its backbone:
    the block layout (``frames``, ``block_frames``) and the few-step sampler's fields (``steps``,
    ``shift``, ``first_steps``, ``renoise``, ``guidance``, ``first_guidance``, ``null_prompt``,
    ``project_blocks``; their meaning is documented on ``StudentConfig``). A config dataclass
    declares those fields itself and calls ``check_sampler`` in its ``__post_init__``.
    ``ROTARY_FRAMES``: the backbone encodes frame positions by rotating keys and queries (RoPE),
    so a key keeps its meaning when the frames before it leave the cache."""

    ROTARY_FRAMES = False

    def check_sampler(self) -> None:
        """ValueError naming the first sampler or block-layout field out of range."""
        if self.frames % self.block_frames:
            raise ValueError(f"block_frames {self.block_frames} must divide frames {self.frames}")
        if self.first_steps < 0:
            raise ValueError(f"first_steps must be >= 0 (0: the same as steps), got {self.first_steps}")
        if self.steps < 1 or self.shift <= 0:
            raise ValueError(f"steps must be >= 1 and shift > 0, got steps={self.steps}, shift={self.shift}")
        if self.guidance <= 0:
            raise ValueError(f"guidance must be > 0 (1: off), got {self.guidance}")
        if self.first_guidance < 0:
            raise ValueError(f"first_guidance must be >= 0 (0: the same as guidance), got {self.first_guidance}")
        if not self.null_prompt.strip():
            raise ValueError("null_prompt must be a non-empty string (the text encoder refuses empty prompts)")
        F, most = self.block_frames, self.frames - self.block_frames
        if self.window and (self.window % F or not F <= self.window <= most):
            raise ValueError(f"window must be 0 (the longest context trained: {most} frames) or a multiple of "
                             f"block_frames {F} in [{F}, {most}], got {self.window}")
        if self.sink and self.context_window() < 2 * F:
            raise ValueError(f"sink keeps the first block in a window of {self.context_window()} frames; it needs "
                             f"room for at least one more block ({2 * F} frames)")
        if self.stream_cache not in ("reencode", "roll"):
            raise ValueError(f"stream_cache must be 'reencode' or 'roll', got {self.stream_cache!r}")
        if self.stream_cache == "roll" and not self.ROTARY_FRAMES:
            raise ValueError("stream_cache 'roll' keeps each cached frame's keys at the position they were "
                             "written at, which needs rotary frame positions; this backbone's are learned "
                             "absolute positions (docs/long-videos.md): use 'reencode'")

    def max_frames(self) -> int | None:
        """The longest clip the rollout can make (None: any length)."""
        return None

    def rolls(self) -> bool:
        """Whether streaming drops stale cache frames (``stream_cache`` "roll") instead of
        re-encoding the window."""
        return self.stream_cache == "roll"

    def context_window(self) -> int:
        """W: how many clean frames a block past the training length attends to (``window``, or
        by default the most any block saw in training, ``frames - block_frames``)."""
        return self.window or self.frames - self.block_frames

    def sampler_levels(self, steps: int | None = None, shift: float | None = None,
                       first_steps: int | None = None) -> tuple[list[float], list[float]]:
        """The default few-step sampler: (levels of block 0, levels of every later block).

        ``steps``/``shift``/``first_steps`` override the config's; block 0 gets
        max(steps, first_steps) steps."""
        from afd.student.schedule import step_levels

        steps, shift = steps or self.steps, shift or self.shift
        first = self.first_steps if first_steps is None else first_steps
        return step_levels(max(steps, first), shift), step_levels(steps, shift)

    @property
    def n_blocks(self) -> int:
        return self.frames // self.block_frames


@dataclass
class StudentConfig(BlockSampler):
    """Shape of the causal AR video transformer.

    The clip is ``frames`` frames of ``channels x height x width`` in the codec's space (pixels
    for the pixel student; for the state student one 10-channel 1x1 token per frame), cut into
    blocks of ``block_frames`` frames (4 = chunk-wise, 1 = frame-wise) and into
    ``patch x patch`` patches per frame. ``video_size`` is the side of the square frames the codec
    decodes to (0: ``height``, the pixel codec's own size).
    """

    channels: int = 3
    height: int = 32
    width: int = 32
    frames: int = 16
    block_frames: int = 4
    patch: int = 8
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    text_dim: int = 384
    # "x0": the network predicts the clean block and the velocity is (x_t - x0_hat) / t;
    # "velocity": it predicts v directly. x0 trained where velocity produced noise in a trial.
    prediction: Literal["x0", "velocity"] = "x0"
    codec: Literal["pixel", "state", "learned"] = "pixel"  # afd.student.codec
    # codec "learned": the frame codec's folder or shipped name (afd.student.codecs.learned), whose
    # latent shape must be (channels, height, width).
    codec_path: str = ""
    video_size: int = 0
    # Default few-step sampler (overridable at sampling time): ``steps`` denoising steps per
    # block at levels 1 - i / steps, shifted by ``shift`` (docs/method.md section 2).
    steps: int = 4
    shift: float = 5.0
    # Between steps: "fresh" re-noises x0_hat with new noise (docs/method.md section 3, Self-Forcing);
    # "ddim" reuses the noise the model implies, eps_hat = (x_t - (1 - t) x0_hat) / t, i.e. an
    # Euler step of the probability-flow ODE - sharper for an undistilled flow model.
    renoise: Literal["fresh", "ddim"] = "fresh"
    # Steps for block 0, the block with no context that lays out the scene (0: ``steps``; never
    # fewer than ``steps``). On the 4-step chunk-wise base, 8 steps there cut the duplicated and
    # vanished objects of the first frames (general-eval Fréchet distance 44 -> 26) for ~20% more
    # model calls per clip.
    first_steps: int = 0
    # Channels of a per-frame convolutional refinement of the raw prediction (0: none), which
    # reads pixels the transformer only sees through 8x8 patch embeddings: the noised frame and
    # the newest clean frame of its context. Why: given the world's own context, the base
    # student redraws a still object 0.1-0.2 px off where it was (it cannot copy to the
    # sub-pixel through its tokens), and an object that straddles a patch seam is drawn by
    # tokens that must agree; convolutions over the full frame see both. Zero-initialised
    # residual, so an older checkpoint fine-tunes into it unchanged at step 0. It acts per frame
    # and reads only frames the attention rule lets that frame see (``RefineHead``). The pixel
    # bases carry one (48 channels); what it measured is in checkpoints/base-chunk/README.md.
    refine: int = 0
    # Classifier-free guidance of the sampler: each step's prediction is
    # ``null + guidance * (prompt - null)``, with ``null`` the prediction for ``null_prompt``
    # (1 = off: one model call per step; otherwise two, batched). ``null_prompt`` stands for "no
    # prompt" (the text encoder refuses an empty string): pretraining's ``text_dropout`` trains
    # it as the unconditional model. Why: the few-step base sometimes never draws a small object
    # (a clip of plain background) or draws it twice; guidance pushes every step toward what the
    # prompt adds to an unconditional scene.
    guidance: float = 1.0
    # Guidance of block 0 alone (0: ``guidance``). Block 0 has no context and lays out the
    # scene: that is where a small low-contrast object goes missing (a clip of plain
    # background), while later blocks copy the object from their context. No shipped config sets
    # it: stronger block-0 guidance lost objects in more clips (checkpoints/base-chunk/README.md).
    first_guidance: float = 0.0
    null_prompt: str = "a video"
    # Each finished block goes through the codec's clamps (``Codec.project``) before the next
    # block's cache is written from it and before it is returned. Off, the cache holds the raw
    # x0 estimate while the clip the trainer sees (and re-noises) is the clamped decode, so the
    # context the student is trained under is not the one it generated under. Off by default:
    # the pixel bases were measured without it.
    project_blocks: bool = False
    # Streaming past ``frames`` (docs/long-videos.md): each later block attends to a window of the
    # last ``window`` clean frames (0: frames - block_frames, the most context training showed),
    # re-indexed to positions 0 .. window - 1 so no position leaves the trained range; ``sink``
    # keeps the clip's first block at the window's start.
    window: int = 0
    sink: bool = False
    # How the window's cache moves past ``frames``. "reencode": the window's frames are encoded
    # again at re-indexed positions, the only choice for learned absolute positions. "roll": the
    # stale frames' keys are dropped and the rest kept as written, each at its clip index (a
    # rolling KV cache, Self-Forcing's); needs rotary frame positions (the Wan student).
    stream_cache: Literal["reencode", "roll"] = "reencode"
    # A student widened from one with fewer latent channels (``afd.student.widen``) draws its
    # rollout noise for those first channels exactly as that student did (the rest from a stream
    # of their own), so it samples the same clips. 0: not widened.
    widened_from: int = 0

    def __post_init__(self):
        check_choices(self)
        if self.height % self.patch or self.width % self.patch:
            raise ValueError(f"patch {self.patch} must divide height {self.height} and width {self.width}")
        if self.refine < 0:
            raise ValueError(f"refine must be >= 0 channels (0: no refinement), got {self.refine}")
        self.check_sampler()
        # The testbed's state codec checks its own fit when it is built (``for_student``,
        # afd.world.state_codec); the core's two codecs are checked here, where the config is read.
        if self.codec == "learned":
            if not self.codec_path or self.video_size < 1 or self.refine:
                raise ValueError(f"codec 'learned' needs codec_path (a frame codec folder or shipped name), "
                                 f"video_size >= 1 (the decoded frame side) and refine 0; got codec_path "
                                 f"{self.codec_path!r}, video_size {self.video_size}, refine {self.refine}")
        elif self.codec == "pixel" and (self.video_size not in (0, self.height) or self.height != self.width
                                        or self.channels != 3):
            raise ValueError(f"codec 'pixel' models square RGB frames as they are: channels 3, height == width, "
                             f"video_size 0 or height; got channels {self.channels}, {self.height}x{self.width}, "
                             f"video_size {self.video_size}")
        if self.dim % self.heads:
            raise ValueError(f"heads {self.heads} must divide dim {self.dim}")
        if self.widened_from and not 0 < self.widened_from < self.channels:
            raise ValueError(f"widened_from {self.widened_from} must be below channels {self.channels} "
                             "(0: not widened)")

    # Fields a checkpoint's config.json may leave out (``afd.student.backbones.transformer.read_student_config``);
    # any other missing field is an error, because its default would silently build or sample a
    # different model (a missing block_frames or prediction loads the weights without complaint
    # and generates nonsense; a missing shift or guidance changes every sample). Each of these
    # came after the shipped pixel checkpoints were saved, and its default is exactly how those
    # checkpoints ran before it existed:
    #   video_size: 0 decodes to ``height``, the pixel codec's only size (the state codec, which
    #     needs it, refuses 0 in __post_init__, so a state checkpoint must state it);
    #   first_guidance: 0 gives block 0 the same guidance as the others;
    #   project_blocks: False caches the raw block, as every rollout did before.
    #   codec_path: "" is no learned codec, which none of them uses;
    #   window, sink, stream_cache: only rollouts past ``frames`` read them, which none could
    #     make before ("reencode" is the only way the built-in backbone streams).
    #   widened_from: 0, none was widened.
    CHECKPOINT_MAY_OMIT = frozenset({"video_size", "first_guidance", "project_blocks", "codec_path", "window",
                                     "sink", "stream_cache", "widened_from"})
    # Knobs that were removed, with the value every shipped checkpoint saved (afd.config: a file
    # naming one loads only with that value). frame_cond: a per-frame adaLN embedding, never on.
    REMOVED_FIELDS = {"frame_cond": False}

    @property
    def pixel_size(self) -> int:
        """Side of the square frames the student's clips have after decoding."""
        return self.video_size or self.height

    def video_format(self):
        """The decoded clips' format: ``frames`` square frames of ``pixel_size`` at the student's fps."""
        from afd.video.core import STUDENT, VideoFormat

        return VideoFormat(frames=self.frames, height=self.pixel_size, width=self.pixel_size, fps=STUDENT.fps)

    @property
    def tokens_per_frame(self) -> int:
        return (self.height // self.patch) * (self.width // self.patch)
