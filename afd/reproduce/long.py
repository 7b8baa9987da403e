"""The reproduction's long-horizon part (``eval_frames``): every world row, base and main-grid
run sampled past its training length and scored per 2-second window and whole
(docs/long-videos.md), the table and drift curves of report.md, and the exposure-bias claim.

results.json holds it under ``long``: ``{frames: {"teacher": eval | None, "loose": eval | None,
"runs": [{"method", "family", "seed", "eval", "id"}]}}``, each eval an ``afd eval --frames``
report (its ``horizon`` entry has the drift curves and the whole-clip measures).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from afd.eval.compare import Stat, diff
from afd.reproduce.config import row_methods, row_update

# Table columns: (label, where, key, digits, higher is better); where is "first" (the first
# window's report), "last" (the last window's drift value) or "whole".
COLUMNS = (("physics total, 0-2 s", "first", "total", 1, True),
           ("PC, whole clip", "whole", "physical_consistency", 1, True),
           ("PC, last 2 s", "last", "physical_consistency", 1, True),
           ("gravity error, last 2 s", "last", "gravity_error", 3, False),
           ("free flight %, last 2 s", "last", "free_flight", 1, None),
           ("ball persistence, last 2 s", "last", "ball_persistence", 1, True),
           ("general total, last 2 s", "last", "general_total", 1, True))
# The rows whose update learns from their own rollouts, weighted (the claim's on-policy side), and
# the control that runs the same update on random weights.
ON_POLICY = ("afd", "oracle")
CHANCE = "chance"


def collect_long(cfg, jobs, done: dict, read) -> dict:
    """``results.json``'s ``long`` from the finished ``long`` jobs; ``done``: finished jobs by id,
    ``read(job)``: its eval report."""
    by_id = {j.id: j for j in jobs}
    out: dict = {}
    for frames in cfg.eval_frames:
        entry = {"teacher": None, "loose": None, "runs": []}
        for j in jobs:
            if j.kind != "long" or j.overrides != (f"frames={frames}",) or j.id not in done:
                continue
            of = by_id.get(j.tags[0].removeprefix("long:")) if j.tags else None
            if of is None:
                continue
            if of.kind == "world":
                entry["teacher" if of.id == "teacher" else "loose"] = read(j)
                continue
            for s in (cfg.seeds if of.kind == "base" else [of.seed]):
                entry["runs"].append({"method": of.method, "family": of.family, "seed": s, "eval": read(j),
                                      "id": j.id})
        out[str(frames)] = entry
    return out


def long_value(ev: dict | None, where: str, key: str) -> float:
    """One number of an ``afd eval --frames`` report (nan when absent)."""
    if not ev:
        return float("nan")
    h = ev.get("horizon") or {}
    if where == "first":
        g = (ev.get("groups") or {}).get("physics") or {}
        v = g.get(key)
    elif where == "whole":
        v = (h.get("whole") or {}).get(key)
    else:
        curve = (h.get("drift") or {}).get(key) or [None]
        v = curve[-1]
    return float("nan") if v is None else float(v)


def long_stat(entry: dict, family: str, method: str, where: str, key: str) -> Stat | None:
    """A family x method row at one length: mean, seed sd and standard error over its seeds
    (the base: one eval, with the whole-clip PC's standard error over clips as its noise)."""
    runs = [r for r in entry["runs"] if r["family"] == family and r["method"] == method]
    if method == "base":
        runs = runs[:1]
    xs = np.asarray([long_value(r["eval"], where, key) for r in runs], float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return None
    if xs.size == 1:
        se = (runs[0]["eval"]["horizon"]["whole"].get(f"{key}_se", float("nan"))
              if where == "whole" else float("nan"))
        return Stat(float(xs[0]), float("nan"), 1, float(se) if se is not None else float("nan"))
    sd = float(xs.std(ddof=1))
    return Stat(float(xs.mean()), sd, int(xs.size), sd / math.sqrt(xs.size))


def long_claims(res: dict, families, methods) -> list[tuple[str, str, str]]:
    """The paper's premise at the longest eval length: every on-policy row (AFD, the oracle, their
    variants and the chance controls) holds physics over the long horizon better than every SFT
    row: whole-clip physical consistency higher by more than 2 standard errors. With a chance
    control of the same student update in the grid (random weights), every weighted row is also
    read against it: what a weighted row gains beyond it is its weights'."""
    long = res.get("long") or {}
    if not long:
        return []
    frames = max(long, key=int)
    entry = long[frames]
    method_of = row_methods(res.get("config"), methods)
    sft = [m for m in methods if method_of[m] == "sft"]
    chance = [m for m in methods if method_of[m] == CHANCE]
    weighted = [m for m in methods if method_of[m] in ON_POLICY]
    out = []
    for fam in families:
        def decide(m: str, other: str | None, text: str) -> tuple[str, str, str]:
            name = f"Exposure bias ({fam}, {frames} frames): {text} (whole-clip PC)"
            if other is None:
                return name, "not measured", f"no chance row ran {m}'s update ({row_update(res, fam, m)})"
            a = long_stat(entry, fam, m, "whole", "physical_consistency")
            b = long_stat(entry, fam, other, "whole", "physical_consistency")
            if a is None or b is None:
                return name, "not measured", "a row is missing"
            d = diff(a, b)
            return (name, "holds" if d.d > 0 and d.above_noise else "does not hold",
                    f"{m} - {other} = {d.text()} ({a.mean:.1f} vs {b.mean:.1f})")

        out += [decide(m, s, f"{m}{' (control)' if m in chance else ''} holds physics over the long "
                             f"horizon better than {s}")
                for m in weighted + chance for s in sft]
        if not chance:
            continue
        for m in weighted:
            c = next((c for c in chance if row_update(res, fam, c) == row_update(res, fam, m)), None)
            out.append(decide(m, c, f"{m}'s weights matter over the long horizon: it beats chance on the "
                                    f"same update{f' ({c})' if c else ''}"))
    return out


def long_markdown(res: dict, cfg, out: Path) -> list[str]:
    """report.md's long-horizon sections (one per length), with their drift figure."""
    lines = []
    for frames, entry in (res.get("long") or {}).items():
        world = [(name, entry[key]) for key, name in (("teacher", "world: real (teacher)"),
                                                      ("loose", "world: loose")) if entry[key]]
        rows = [(name, [(long_value(ev, w, k), None) for _, w, k, _, _ in COLUMNS]) for name, ev in world]
        for fam in cfg.families:
            for m in cfg.methods:
                n = len([r for r in entry["runs"] if r["family"] == fam and r["method"] == m])
                cells = []
                for _, w, k, _, _ in COLUMNS:
                    st = long_stat(entry, fam, m, w, k)
                    cells.append((st.mean, st.sd) if st else (float("nan"), None))
                if n:
                    rows.append((f"{fam} / {m} (n={1 if m == 'base' else n})", cells))
        if len(rows) == len(world):
            continue
        fig = _drift_figure(entry, cfg, out / f"fig_long_{frames}.png")
        lines += [f"## Long horizon: {frames} frames ({int(frames) // 8} s)", "",
                  f"Every row sampled at {frames} frames (students stream with their rolling window) and scored "
                  "per 2-second window (`afd eval --frames`, docs/long-videos.md): the first window's physics "
                  "total, the real world fitted to the whole clip, and the last window's values. Gravity error "
                  "counts the clips that show free flight in that window; free flight is their share (the "
                  "world's ball comes to rest). Mean ± seed std.", "",
                  _long_table(rows, len(world)), "", f"![]({fig})", ""]
    return lines


def _long_table(rows, n_world: int) -> str:
    headers = [c[0] for c in COLUMNS]
    out = ["| | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for name, cells in rows:
        out.append(f"| {name} | " + " | ".join(
            "-" if not math.isfinite(m) else f"{m:.{c[3]}f}" + (f" ± {s:.{c[3]}f}" if s is not None and
                                                                 math.isfinite(s) else "")
            for (m, s), c in zip(cells, COLUMNS)) + " |")
    return "\n".join(out)


def _drift_figure(entry: dict, cfg, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("physical_consistency", "physical consistency"), ("gravity_error", "gravity error (free flight)"),
            ("free_flight", "free flight %"))
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3.5))
    series = [("world real", [entry["teacher"]])] if entry["teacher"] else []
    for fam in cfg.families:
        for m in cfg.methods:
            evs = [r["eval"] for r in entry["runs"] if r["family"] == fam and r["method"] == m]
            if evs:
                series.append((f"{fam} / {m}", evs[:1] if m == "base" else evs))
    for ax, (key, label) in zip(axes, keys):
        for name, evs in series:
            curves = np.array([[np.nan if v is None else v for v in ev["horizon"]["drift"][key]] for ev in evs], float)
            xs = np.arange(curves.shape[1]) * 2 + 1
            n = np.isfinite(curves).sum(0)
            mean = np.where(n > 0, np.nansum(curves, 0) / np.maximum(n, 1), np.nan)  # no free flight: a gap
            ax.plot(xs, mean, "o-", label=name)
        ax.set_xlabel("window centre (s)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle("Drift past the 2-second training length (mean over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
