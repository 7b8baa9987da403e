"""Videos: one type (frames (T, C, H, W) float in [-1, 1] plus fps), resampling, files, strips."""

from afd.lazy import lazy_exports

__all__ = ["Video", "VideoFormat", "TEACHER_NATIVE", "STUDENT", "resample", "stack"]
# Resolved on first use: ``afd.video.io`` (file formats) must stay importable without torch.
__getattr__ = lazy_exports(__name__, {name: "afd.video.core" for name in __all__})
