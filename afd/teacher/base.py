"""The black-box teacher interface: prompts and seeds in, finished videos out. Nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: the CLI imports TeacherError without loading torch
    from afd.video.core import Video


class TeacherError(RuntimeError):
    """A teacher could not deliver a clip; the message names the prompt/seed and the cause."""


class Teacher(ABC):
    """A sampler. ``sample`` returns one clip per (prompt, seed), each in the teacher's own
    format (any frame count, size and fps); ``id`` names the teacher for caching: two teachers
    with the same id must return the same clip for the same (prompt, seed)."""

    @property
    @abstractmethod
    def id(self) -> str: ...

    @abstractmethod
    def sample(self, prompts: list[str], seeds: list[int]) -> list[Video]: ...

    def sample_iter(self, prompts: list[str], seeds: list[int]) -> Iterator[tuple[int, Video]]:
        """The same request, streamed: yields ``(index, clip)`` as each clip becomes available,
        in any order. Teachers that fetch clips one by one (HTTP) override it so a cache can
        store every clip the moment it is paid for; the default wraps ``sample``."""
        yield from enumerate(self.sample(prompts, seeds))

    def bind_state_dir(self, directory) -> None:
        """Offered by ``CachedTeacher``: its directory for this teacher. Teachers with resumable
        state (the HTTP teacher's job journal) keep it there, beside the clips it pays for.
        The default keeps nothing."""


def check_request(prompts: list[str], seeds: list[int]) -> None:
    """Validate a sample() request; raises ValueError naming the bad entry."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} must be a non-empty string, got {p!r}")
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seed {i} (prompt {p!r}) must be an int >= 0, got {s!r}")
