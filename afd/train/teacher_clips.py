"""The teacher side of an adaptation run: a fixed budget of teacher clips, paid once, reused.

Clip k of adaptation prompt p is the teacher's answer to (p, seed k), k < ``clips_per_prompt``
(docs/testbed.md "Teacher budget": 200 prompts x 1 clip by default). Every request goes through a
``CachedTeacher`` whose directory is shared by all runs, so a clip is paid for once whatever
method asks; the budget caps what this cache may ever pay for this teacher, and a request
beyond it raises ``TeacherBudgetExceeded`` before paying. Clips are adapted to the student's
format (frames by timestamp, pixels by area) and kept in memory for the rest of the run.
"""

from __future__ import annotations

import time

import torch

from afd.teacher import CachedTeacher, TeacherBudgetExceeded, make_teacher, to_student_format
from afd.train.config import TeacherConfig
from afd.video.core import VideoFormat, stack


class TeacherClips:
    """Teacher clips for the adaptation prompts, as student-format tensors.

    ``paid`` / ``cached``: clips this run paid for / got without paying (disk cache or memory),
    cumulative; the trainer stores them in its checkpoints so a resumed run keeps counting.
    """

    def __init__(self, cfg: TeacherConfig, prompts: list[str], fmt: VideoFormat):
        self.cfg, self.fmt = cfg, fmt
        self.budget = cfg.budget if cfg.budget is not None else len(prompts) * cfg.clips_per_prompt
        self.teacher = CachedTeacher(make_teacher(cfg.spec), cfg.cache_dir, budget=self.budget)
        self.prompts = prompts
        self._memo: dict[tuple[str, int], torch.Tensor] = {}
        self.paid = 0
        self.cached = 0

    def prefetch(self) -> None:
        """Pay for (or load) every budgeted clip now: (prompt, k) for k < clips_per_prompt.

        Runs before the first iteration so that teacher latency and failures happen up front;
        it does not count as the run's "cached" calls (nothing was requested by training yet)."""
        jobs = [(p, k) for p in self.prompts for k in range(self.cfg.clips_per_prompt)]
        todo = [j for j in jobs if j not in self._memo]
        before = self.teacher.stats.paid
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            self._remember(chunk, self.teacher.sample([p for p, _ in chunk], [k for _, k in chunk]))
        self.paid += self.teacher.stats.paid - before

    def prefetch_budget(self) -> str:
        """``prefetch`` with a budget error that says nothing was trained; returns a summary line."""
        t0, before = time.time(), self.paid
        try:
            self.prefetch()
        except TeacherBudgetExceeded as e:
            raise TeacherBudgetExceeded(f"{e} (while prefetching the teacher budget; nothing trained)") from None
        return (f"teacher clips ready ({self.paid - before} paid now, {self.paid_total} in "
                f"{self.teacher.dir}) in {time.time() - t0:.1f}s")

    def get(self, prompts: list[str], clip_ids: list[int]) -> torch.Tensor:
        """(P, T, C, H, W) float in [-1, 1]: clip ``clip_ids[i]`` of ``prompts[i]``."""
        if len(prompts) != len(clip_ids):
            raise ValueError(f"{len(prompts)} prompts but {len(clip_ids)} clip ids")
        for k in clip_ids:
            if not 0 <= k < self.cfg.clips_per_prompt:
                raise ValueError(f"clip id {k} outside [0, teacher.clips_per_prompt={self.cfg.clips_per_prompt})")
        jobs = list(zip(prompts, clip_ids))
        missing = sorted({j for j in jobs if j not in self._memo})
        if missing:
            paid0 = self.teacher.stats.paid
            self._remember(missing, self.teacher.sample([p for p, _ in missing], [k for _, k in missing]))
            paid = self.teacher.stats.paid - paid0
            self.paid += paid
            self.cached += len(jobs) - paid
        else:
            self.cached += len(jobs)
        return torch.stack([self._memo[j] for j in jobs])

    @property
    def used(self) -> int:
        """Distinct teacher clips this run has drawn on (paid now or read from the shared cache):
        the teacher-budget curve's x, at most ``budget``."""
        return len(self._memo)

    @property
    def paid_total(self) -> int:
        """Clips ever paid for this teacher in the shared cache (all runs)."""
        return self.teacher.stats.paid_total

    def _remember(self, jobs, videos) -> None:
        clips = stack(to_student_format(videos, self.fmt))
        for j, c in zip(jobs, clips):
            self._memo[j] = c
