"""Videos: one type (frames (T, C, H, W) float in [-1, 1] plus fps), resampling, files, strips."""

from afd.video.core import STUDENT, TEACHER_NATIVE, Video, VideoFormat, resample, stack

__all__ = ["Video", "VideoFormat", "TEACHER_NATIVE", "STUDENT", "resample", "stack"]
