"""Teacher clips -> the student's format (frames by timestamp, pixels by area)."""

from __future__ import annotations

from afd.video.core import STUDENT, Video, VideoFormat, resample


def to_student_format(videos: list[Video], fmt: VideoFormat = STUDENT) -> list[Video]:
    """Resample each clip to ``fmt`` (default 32x32, 16 frames, 8 fps). See ``resample``."""
    return [resample(v, fmt) for v in videos]
