"""Progress for long phases: a tqdm bar plus one line with the phase's estimated length, so a
phase that runs for minutes never looks hung. Everything goes to stderr; stdout keeps results."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``"40 s"`` below 90 s, else minutes with one decimal (``"3.5 min"``)."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class PhaseProgress:
    """A bar over ``total`` items of a phase named ``name`` (e.g. "eval: sample").

    ``update(n)`` after each batch; after the first one a line
    ``"{name}: {total} {unit} {detail}, ~X min at the first batch's rate"`` is printed (the
    phase's start line: the first batch is the earliest moment an estimate exists). With
    ``enabled=False`` nothing is printed at all. Use as a context manager (closes the bar).
    """

    def __init__(self, total: int, name: str, enabled: bool, unit: str = "clips", detail: str = ""):
        self.total, self.name, self.unit, self.detail, self.enabled = total, name, unit, detail, enabled
        self.done = 0
        self._t0 = time.monotonic()
        self._bar = tqdm(total=total, desc=name, unit=unit[:-1] if unit.endswith("s") else unit,
                         disable=not enabled, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, n: int) -> None:
        if self.enabled and self.done == 0 and n > 0 and self.total:
            estimate = (time.monotonic() - self._t0) / n * self.total
            detail = f" {self.detail}" if self.detail else ""
            tqdm.write(f"{self.name}: {self.total} {self.unit}{detail}, ~{format_duration(estimate)} at the "
                       f"first batch's rate", file=sys.stderr)
        self.done += n
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
