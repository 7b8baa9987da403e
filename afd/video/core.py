"""The one video type, and resampling to a target format by timestamp and area."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class VideoFormat:
    """A target format: frame count, size and frame rate."""

    frames: int
    height: int
    width: int
    fps: float

    def __post_init__(self):
        for name in ("frames", "height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"VideoFormat.{name} must be a positive int, got {v!r}")
        if not self.fps > 0:
            raise ValueError(f"VideoFormat.fps must be > 0, got {self.fps!r}")

    @property
    def duration(self) -> float:
        """Time of the last frame, in seconds (frames sit at i / fps)."""
        return (self.frames - 1) / self.fps


TEACHER_NATIVE = VideoFormat(frames=32, height=64, width=64, fps=16.0)
STUDENT = VideoFormat(frames=16, height=32, width=32, fps=8.0)


@dataclass
class Video:
    """A clip: ``frames`` (T, C, H, W) float32 in [-1, 1] (C = 3, RGB) and ``fps``."""

    frames: torch.Tensor
    fps: float

    def __post_init__(self):
        f = self.frames
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"Video.frames must be a torch.Tensor, got {type(f).__name__}")
        if f.ndim != 4 or f.shape[1] != 3:
            raise ValueError(f"Video.frames must be (T, 3, H, W), got shape {tuple(f.shape)}")
        if f.shape[0] < 1:
            raise ValueError("Video.frames has zero frames")
        if not f.is_floating_point():
            raise TypeError(f"Video.frames must be floating point in [-1, 1], got {f.dtype}")
        if not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"Video.fps must be > 0, got {self.fps!r}")
        self.fps = float(self.fps)

    @property
    def format(self) -> VideoFormat:
        T, _, H, W = self.frames.shape
        return VideoFormat(T, H, W, self.fps)

    def to_uint8(self) -> np.ndarray:
        """(T, H, W, 3) uint8, the layout of image and video files."""
        x = ((self.frames.detach().float().clamp(-1, 1) + 1) * 127.5).round()
        return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    @classmethod
    def from_uint8(cls, array: np.ndarray, fps: float) -> "Video":
        """From (T, H, W, 3) uint8."""
        a = np.asarray(array)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"expected (T, H, W, 3) uint8 frames, got shape {a.shape}")
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
        return cls(t / 127.5 - 1.0, fps)


def stack(videos: list[Video]) -> torch.Tensor:
    """Stack clips of one format into (B, T, C, H, W)."""
    if not videos:
        raise ValueError("stack() needs at least one video")
    fmt = videos[0].format
    for i, v in enumerate(videos):
        if v.format != fmt:
            raise ValueError(f"video {i} has format {v.format}, video 0 has {fmt}; resample first")
    return torch.stack([v.frames for v in videos])


def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights: output cell j averages the input cells it overlaps, by overlap."""
    edges_in = torch.arange(n_in + 1, dtype=torch.float64) / n_in
    edges_out = torch.arange(n_out + 1, dtype=torch.float64) / n_out
    lo = torch.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = torch.minimum(edges_out[1:, None], edges_in[None, 1:])
    w = (hi - lo).clamp(min=0)
    return (w / w.sum(1, keepdim=True)).float()


def _center_crop_to_aspect(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    H, W = frames.shape[-2:]
    if H * width == W * height:
        return frames
    if W * height > H * width:  # too wide
        new_w = max(1, round(H * width / height))
        x0 = (W - new_w) // 2
        return frames[..., :, x0:x0 + new_w]
    new_h = max(1, round(W * height / width))
    y0 = (H - new_h) // 2
    return frames[..., y0:y0 + new_h, :]


def resample(video: Video, fmt: VideoFormat) -> Video:
    """Resample a clip to ``fmt``.

    Time: target frame j sits at t = j / fmt.fps; it is the linear blend of the two source
    frames around t (exactly one source frame when the timestamps coincide, e.g. 16 -> 8 fps).
    The clip must last at least ``fmt.duration``; a longer clip is cut.
    Space: centre crop to the target aspect ratio, then exact area averaging (each output
    pixel is the overlap-weighted mean of the input pixels it covers).
    """
    src = video.frames
    T = src.shape[0]
    src_duration = (T - 1) / video.fps
    if fmt.duration > src_duration + 1e-6:
        raise ValueError(
            f"clip too short: it lasts {src_duration:.3f} s ({T} frames at {video.fps:g} fps), "
            f"the target format needs {fmt.duration:.3f} s ({fmt.frames} frames at {fmt.fps:g} fps)"
        )
    pos = torch.arange(fmt.frames, dtype=torch.float64) * (video.fps / fmt.fps)
    pos = pos.clamp(max=T - 1)
    i0 = pos.floor().long()
    frac = (pos - i0).float()
    snap = frac < 1e-6
    i1 = torch.where(snap, i0, (i0 + 1).clamp(max=T - 1))
    frac = torch.where(snap, torch.zeros_like(frac), frac)
    f = src[i0] * (1 - frac.view(-1, 1, 1, 1)) + src[i1] * frac.view(-1, 1, 1, 1)
    f = _center_crop_to_aspect(f, fmt.height, fmt.width)
    H, W = f.shape[-2:]
    if (H, W) != (fmt.height, fmt.width):
        mh = _area_matrix(H, fmt.height)
        mw = _area_matrix(W, fmt.width)
        f = torch.einsum("oh,tchw,pw->tcop", mh, f.float(), mw)
    return Video(f.contiguous(), fmt.fps)
