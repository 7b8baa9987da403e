"""The job journal: every job an HTTP teacher paid for, written down before it is polled.

A job-based API charges at submission. If the client dies while the job runs, the clip is paid
for but not received; the journal lets the next run collect that job by id instead of
submitting (and paying) again. It is an append-only JSONL file, one ``{"key", "prompt",
"seed", "job_id", "state", "time"}`` per event, fsync'd per line; the last line per key wins and
a line torn by a kill is skipped. Under ``CachedTeacher`` it lives in the cache directory,
next to the clips it pays for.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("afd.teacher.jobs")

STATES = ("submitted", "collected", "failed")


class JobJournal:
    """Journal at ``path``; ``path=None`` keeps it in memory only (nothing survives the process)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._torn_tail = False
        self.reload()

    def reload(self) -> None:
        """Re-read the file (another process may have added jobs)."""
        if self.path is None or not self.path.exists():
            return
        data = self.path.read_bytes()
        jobs, bad = {}, 0
        for line in data.splitlines():
            try:
                rec = json.loads(line)
                if not (isinstance(rec, dict) and isinstance(rec.get("key"), str) and rec.get("state") in STATES
                        and isinstance(rec.get("job_id"), str)):
                    raise ValueError
            except ValueError:
                bad += 1
                continue
            jobs[rec["key"]] = rec
        if bad:
            log.warning("%s: skipped %d unreadable line(s) (a write cut short by a kill?)", self.path, bad)
        with self._lock:
            self._jobs = jobs
            self._torn_tail = bool(data) and not data.endswith(b"\n")

    def get(self, key: str) -> dict | None:
        """The latest record for ``key``, or None."""
        with self._lock:
            return self._jobs.get(key)

    def job_id(self, key: str) -> str | None:
        """The job to collect for ``key`` instead of submitting: any journaled job not failed."""
        rec = self.get(key)
        return rec["job_id"] if rec is not None and rec["state"] != "failed" else None

    def record(self, key: str, prompt: str, seed: int, job_id: str, state: str) -> None:
        """Append one event; on return it is on disk."""
        if state not in STATES:
            raise ValueError(f"job state must be one of {STATES}, got {state!r}")
        rec = {"key": key, "prompt": prompt, "seed": seed, "job_id": job_id, "state": state, "time": time.time()}
        line = json.dumps(rec) + "\n"
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    # After a torn last line, start on a fresh one so this record stays readable.
                    f.write(("\n" if self._torn_tail else "") + line)
                    f.flush()
                    os.fsync(f.fileno())
                self._torn_tail = False
            self._jobs[key] = rec

    def pending(self) -> list[dict]:
        """Records of jobs submitted but not yet collected."""
        with self._lock:
            return [r for r in self._jobs.values() if r["state"] == "submitted"]
