"""Shared pieces for the HTTP teacher tests: a tiny deterministic teacher and a loopback server."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time

import torch

from afd.teacher.base import Teacher, TeacherError, check_request
from afd.teacher.server import create_app, running_server
from afd.video.core import Video


class TinyTeacher(Teacher):
    """Small smooth clips (6 frames, 16x16, 8 fps) for any prompt, a function of (prompt, seed).
    Prompts starting with "refuse" are refused; ``delay`` models generation time."""

    def __init__(self, frames: int = 6, size: int = 16, fps: float = 8.0, delay: float = 0.0):
        self.frames, self.size, self.fps, self.delay = frames, size, fps, delay
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return f"tiny-{self.frames}x{self.size}"

    def clip(self, prompt: str, seed: int) -> Video:
        h = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
        base = torch.tensor([h[0], h[1], h[2]], dtype=torch.float32) / 127.5 - 1.0
        ramp = torch.linspace(-0.3, 0.3, self.size)
        f = base.view(1, 3, 1, 1) + ramp.view(1, 1, 1, -1) + 0.05 * torch.arange(self.frames).view(-1, 1, 1, 1)
        return Video(f.expand(self.frames, 3, self.size, self.size).clamp(-1, 1).contiguous(), self.fps)

    def sample(self, prompts, seeds):
        check_request(prompts, seeds)
        for p in prompts:
            if p.startswith("refuse"):
                raise TeacherError(f"no clip for prompt {p!r}")
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.calls += len(prompts)
        return [self.clip(p, s) for p, s in zip(prompts, seeds)]


@contextlib.contextmanager
def serve(teacher: Teacher, **kwargs):
    """(app, base URL) of ``create_app(teacher, **kwargs)`` on a free loopback port."""
    kwargs.setdefault("token_env", None)
    app = create_app(teacher, **kwargs)
    with running_server(app) as url:
        yield app, url


def fast_client_kwargs(**overrides) -> dict:
    """HTTPTeacher options for tests: short timeouts and backoff so every loop is brief."""
    kw = dict(concurrency=4, connect_timeout=2.0, read_timeout=2.0, retries=12, backoff=0.02,
              max_backoff=0.2, deadline=30.0)
    kw.update(overrides)
    return kw


def mean_abs(a: Video, b: Video) -> float:
    return float((a.frames - b.frames).abs().mean())
