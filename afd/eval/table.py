"""Plain-text tables of eval reports: rows are metrics, one column per report."""

from __future__ import annotations

from afd.eval.score import GENERAL_KEYS, PHYSICS_KEYS
from afd.eval.style import STYLE_KEYS

# Metrics that are not 0-100 scores, with the note shown next to them.
RAW = {"gravity_error": "relative, lower is better", "frechet_distance": "lower is better"}


def _fmt(v, key: str, se=None) -> str:
    if v is None:
        return "-"
    digits = 3 if key in RAW else 1
    return f"{v:.{digits}f}" + (f" ±{se:.{digits}f}" if se is not None else "")


def format_reports(reports: dict[str, dict]) -> str:
    """Side-by-side table of reports keyed by column name (e.g. {"real": r1, "loose": r2}). A
    report with a ``stderr`` entry (``afd.eval.score.bootstrap_stderr``) shows value ±se."""
    names = list(reports)
    rows = []  # (label, one cell per report); a group header row holds the column names
    for group, keys in (("physics", PHYSICS_KEYS), ("general", GENERAL_KEYS), ("style", STYLE_KEYS)):
        if all(r["groups"].get(group) is None for r in reports.values()):
            continue
        rows.append((f"{group} group", names))
        for k in keys:
            label = f"  {k}" + (f" ({RAW[k]})" if k in RAW else "")
            cells = []
            for r in reports.values():
                g = r["groups"].get(group)
                se = ((r.get("stderr") or {}).get(group) or {}).get(k)
                cells.append(_fmt(g[k] if g else None, k, se))
            rows.append((label, cells))
    rows.append(("clips", [str(r["n_videos"]) for r in reports.values()]))
    width = max(10, *(len(c) for _, cells in rows for c in cells))
    return "\n".join(f"{label:<44}" + "".join(f"{c:>{width + 2}}" for c in cells) for label, cells in rows)


def format_spread(pc_scores, label: str = "physical consistency") -> str:
    """One line on the per-clip distribution of a 0-100 physics score (default: physical consistency)."""
    import numpy as np

    x = np.asarray(pc_scores, float)
    if x.size == 0:
        return f"{label} per clip: no physics clips"
    q = np.percentile(x, [10, 25, 50, 75, 90])
    return (f"{label} per clip: mean {x.mean():.1f}  p10 {q[0]:.1f}  p25 {q[1]:.1f}  median {q[2]:.1f}  "
            f"p75 {q[3]:.1f}  p90 {q[4]:.1f};  >= 80: {100 * (x >= 80).mean():.0f}%  "
            f"<= 40: {100 * (x <= 40).mean():.0f}%")


def format_frechet_terms(terms: dict[str, tuple[float, float]], distance: float | None = None) -> str:
    """``afd.eval.score.frechet_terms`` as a table, the largest contributions first; ``distance``
    (the report's full Fréchet distance) adds a line with what the correlations add to it."""
    rows = sorted(terms.items(), key=lambda kv: -sum(kv[1]))
    lines = ["Fréchet distance by descriptor (standardised; diagonal terms, their sum ~ the distance)",
             f"  {'descriptor':<16}{'mean term':>11}{'spread term':>13}{'total':>9}"]
    lines += [f"  {n:<16}{m:>11.2f}{s:>13.2f}{m + s:>9.2f}" for n, (m, s) in rows]
    total = sum(m + s for m, s in terms.values())
    lines.append(f"  {'sum':<16}{'':>11}{'':>13}{total:>9.2f}")
    if distance is not None:
        lines.append(f"  full distance {distance:.2f} (the difference comes from correlations between descriptors)")
    return "\n".join(lines)
