"""Two evaluations compared against their noise: a value with its standard error, a difference
with its combined error, and the words "within noise" when the difference is inside 2 errors.

A single eval's noise is its bootstrap standard error (``stderr`` in the report of
``afd.eval.score``); a mean over n training seeds has the seed standard deviation over sqrt(n).
Used by ``afd train``'s closing summary, ``afd reproduce``'s verdicts and the shipped cards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The headline measures of a comparison: (group, key, label, digits).
HEADLINE = [("physics", "physical_consistency", "physical consistency", 1),
            ("physics", "gravity_error", "gravity error (relative, lower is better)", 3),
            ("physics", "bounce_accuracy", "bounce accuracy", 1), ("physics", "total", "physics total", 1),
            ("general", "total", "general total", 1)]


@dataclass(frozen=True)
class Stat:
    """A row's value: mean over n runs, seed std (nan when n < 2) and the standard error of the mean."""

    mean: float
    sd: float
    n: int
    se: float


def value(ev: dict | None, group: str, key: str) -> float:
    """``ev["groups"][group][key]`` of an eval report, nan when absent."""
    g = ((ev or {}).get("groups") or {}).get(group) or {}
    v = g.get(key)
    return float("nan") if v is None else float(v)


def eval_se(ev: dict | None, group: str, key: str) -> float:
    """The bootstrap standard error of that value, nan when the report has none."""
    v = (((ev or {}).get("stderr") or {}).get(group) or {}).get(key)
    return float("nan") if v is None else float(v)


def single(ev: dict | None, group: str, key: str) -> Stat | None:
    """One eval (a world row, the base, a sweep point): its bootstrap standard error is its noise."""
    m = value(ev, group, key)
    if not math.isfinite(m):
        return None
    se = eval_se(ev, group, key)
    return Stat(m, float("nan"), 1, se)


@dataclass(frozen=True)
class Diff:
    d: float  # a - b
    se: float  # sqrt(se_a^2 + se_b^2); nan when either is unknown
    pooled_sd: float  # sqrt((sd_a^2 + sd_b^2) / 2) over seeds; nan unless both have >= 2 seeds

    @property
    def above_noise(self) -> bool:
        return math.isfinite(self.se) and abs(self.d) > 2 * self.se

    @property
    def margin_sd(self) -> float:
        """The difference in pooled seed standard deviations (nan when not defined)."""
        return self.d / self.pooled_sd if math.isfinite(self.pooled_sd) and self.pooled_sd > 0 else float("nan")

    def text(self, digits: int = 1) -> str:
        se = f" ± {2 * self.se:.{digits}f}" if math.isfinite(self.se) else ""
        return f"{self.d:+.{digits}f}{se}" + ("" if self.above_noise else " (within noise)")


def diff(a: Stat, b: Stat) -> Diff:
    se = math.sqrt(a.se ** 2 + b.se ** 2) if math.isfinite(a.se) and math.isfinite(b.se) else float("nan")
    pooled = math.sqrt((a.sd ** 2 + b.sd ** 2) / 2) if a.n > 1 and b.n > 1 else float("nan")
    return Diff(a.mean - b.mean, se, pooled)


def change_lines(before: dict, after: dict, rows, names: tuple[str, str] = ("base", "adapted")) -> list[str]:
    """One line per (group, key, label, digits) of ``rows``: before ± se -> after ± se, and the change
    with 2 combined errors (or "within noise")."""
    out = []
    for group, key, label, digits in rows:
        a, b = single(after, group, key), single(before, group, key)
        if a is None or b is None:
            continue
        err = (lambda s: f" ± {s.se:.{digits}f}" if math.isfinite(s.se) else "")  # noqa: E731
        out.append(f"{label}: {names[0]} {b.mean:.{digits}f}{err(b)} -> {names[1]} {a.mean:.{digits}f}{err(a)}, "
                   f"change {diff(a, b).text(digits)}")
    return out
