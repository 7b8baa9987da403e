"""Progress for long phases: a tqdm bar plus one line with the phase's estimated length, so a
phase that runs for minutes never looks hung. Everything goes to stderr; stdout keeps results."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class PhaseProgress:
    """A bar over ``total`` items of a phase named ``name`` (e.g. "eval: sample").

    ``update(n)`` after each batch; after the first one a line
    ``"{name}: {total} {unit} {detail}, ~X min at the first batch's rate"`` is printed. With
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
            elapsed = time.monotonic() - self._t0
            minutes = elapsed / n * self.total / 60
            detail = f" {self.detail}" if self.detail else ""
            tqdm.write(f"{self.name}: {self.total} {self.unit}{detail}, ~{minutes:.1f} min at the first "
                       f"batch's rate", file=sys.stderr)
        self.done += n
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
