"""A content-addressed, budgeted cache in front of any teacher.

Every clip is stored once, keyed by (teacher id, prompt, seed), as a lossless npz written
atomically (temporary file + rename), so a crash never leaves a half-written clip and a paid clip
is never lost or paid for twice. The cache directory is the ledger: the number of clips stored
for a teacher is the number of paid calls, across runs and processes, and the budget caps it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from afd.teacher.base import Teacher, TeacherError, check_request
from afd.video.core import Video
from afd.video.io import read_video, write_video


class TeacherBudgetExceeded(TeacherError):
    """Paying for the missing clips would exceed the configured budget; nothing was paid."""


@dataclass
class CacheStats:
    paid: int = 0  # clips paid for by this object (teacher calls)
    hits: int = 0  # clips served from disk by this object
    paid_total: int = 0  # clips ever paid for this teacher in this cache directory


def clip_key(teacher_id: str, prompt: str, seed: int) -> str:
    return hashlib.sha256(json.dumps([teacher_id, prompt, int(seed)]).encode()).hexdigest()


class CachedTeacher(Teacher):
    """Wraps ``inner``; same ``id``. Misses are requested from ``inner.sample_iter`` in chunks
    of ``chunk_size`` and every clip is stored the moment it arrives, so an interrupted batch
    keeps what it already paid for.

    ``budget``: the most clips this teacher may ever be paid for in this cache (None = no cap).
    A request whose misses would exceed it raises TeacherBudgetExceeded before paying anything.
    """

    def __init__(self, inner: Teacher, cache_dir: str | os.PathLike, budget: int | None = None,
                 chunk_size: int = 16):
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0 or None, got {budget}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.inner, self.budget, self.chunk_size = inner, budget, chunk_size
        slug = re.sub(r"[^A-Za-z0-9@._-]+", "_", inner.id)[:80]
        self.dir = Path(cache_dir) / f"{slug}-{hashlib.sha256(inner.id.encode()).hexdigest()[:8]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        inner.bind_state_dir(self.dir)
        self.stats = CacheStats(paid_total=sum(1 for _ in self.dir.glob("clips/*/*.npz")))

    @property
    def id(self) -> str:
        return self.inner.id

    def path_for(self, prompt: str, seed: int) -> Path:
        k = clip_key(self.inner.id, prompt, seed)
        return self.dir / "clips" / k[:2] / f"{k}.npz"

    def contains(self, prompt: str, seed: int) -> bool:
        return self.path_for(prompt, seed).exists()

    def sample(self, prompts: list[str], seeds: list[int]) -> list[Video]:
        check_request(prompts, seeds)
        missing: list[tuple[str, int]] = []
        seen = set()
        for p, s in zip(prompts, seeds):
            if (p, s) not in seen and not self.contains(p, s):
                missing.append((p, s))
            seen.add((p, s))
        if missing and self.budget is not None and self.stats.paid_total + len(missing) > self.budget:
            raise TeacherBudgetExceeded(
                f"teacher {self.inner.id!r}: this request needs {len(missing)} new clips but the budget "
                f"is {self.budget} and {self.stats.paid_total} are already paid for in {self.dir} "
                f"({self.budget - self.stats.paid_total} left); raise the budget or reuse cached prompts/seeds"
            )
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start:start + self.chunk_size]
            got = set()
            for i, v in self.inner.sample_iter([p for p, _ in chunk], [s for _, s in chunk]):
                if not isinstance(i, int) or not 0 <= i < len(chunk) or i in got:
                    raise TeacherError(f"teacher {self.inner.id!r} yielded an invalid or repeated index {i!r}")
                p, s = chunk[i]
                if not isinstance(v, Video):
                    raise TeacherError(f"teacher {self.inner.id!r} returned {type(v).__name__} for {p!r} seed {s}")
                self._store(p, s, v)  # stored as soon as it arrives: an interruption loses nothing paid
                got.add(i)
            if len(got) != len(chunk):
                lost = [chunk[i] for i in range(len(chunk)) if i not in got][:5]
                raise TeacherError(
                    f"teacher {self.inner.id!r} returned {len(got)} clips for {len(chunk)} requests; "
                    f"missing e.g. {lost}"
                )
        out = []
        fetched = {m for m in missing}
        for p, s in zip(prompts, seeds):
            out.append(read_video(self.path_for(p, s)))
            if (p, s) in fetched:
                fetched.discard((p, s))  # the first occurrence was paid, repeats are hits
            else:
                self.stats.hits += 1
        return out

    def _store(self, prompt: str, seed: int, video: Video) -> None:
        path = self.path_for(prompt, seed)
        write_video(path, video, record={"teacher": self.inner.id, "prompt": prompt, "seed": seed})
        self.stats.paid += 1
        self.stats.paid_total += 1
        # A human-readable index; the clip files themselves are the source of truth.
        with open(self.dir / "index.jsonl", "a") as f:
            f.write(json.dumps({"prompt": prompt, "seed": seed, "file": str(path.relative_to(self.dir)),
                                "time": time.time()}) + "\n")
