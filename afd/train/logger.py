"""Run logs: one JSON line per record, the same scalars in tensorboard."""

from __future__ import annotations

import json
import math
from pathlib import Path


class RunLogger:
    """Append-only JSONL log (``log.jsonl``) plus tensorboard event files (``tb/``)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "log.jsonl"
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))

    def log(self, step: int, kind: str, **scalars) -> None:
        record = {"step": step, "kind": kind, **scalars}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run rewrites them)."""
        truncate_jsonl(self.path, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep only the lines of a JSONL log whose ``step`` is <= ``step`` (rewritten atomically)."""
    from afd.io_utils import atomic_write_text

    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in keep))
