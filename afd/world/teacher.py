"""The embedded default teacher: the physics world in ``real`` mode."""

from __future__ import annotations

from afd.teacher.base import Teacher, check_request
from afd.video.core import TEACHER_NATIVE, Video, VideoFormat
from afd.world.sample import WORLD_VERSION, sample_world


class WorldTeacher(Teacher):
    """Samples the built-in world. Returns plain videos: the simulation record stays hidden,
    as a real API's internals would."""

    def __init__(self, mode: str = "real", fmt: VideoFormat = TEACHER_NATIVE):
        self.mode, self.fmt = mode, fmt

    @property
    def id(self) -> str:
        f = self.fmt
        return f"world-v{WORLD_VERSION}-{self.mode}-{f.height}x{f.width}x{f.frames}@{f.fps:g}fps"

    def sample(self, prompts: list[str], seeds: list[int]) -> list[Video]:
        check_request(prompts, seeds)
        return [c.video for c in sample_world(prompts, seeds, self.mode, self.fmt)]
