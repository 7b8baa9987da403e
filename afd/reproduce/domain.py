"""The reproduction's continual-adaptation part (docs/style.md): the new domain's style table, and
what each run keeps of the original domain (``retention_splits``).

results.json holds the retention evals under ``retention``: ``{"splits": [...], "runs": [{"method",
"family", "seed", "eval", "id"}]}``, each eval an ``afd eval`` report of the run's student (the
base's for every seed) on the original domain's splits.
"""

from __future__ import annotations

import math

from afd.eval.compare import Stat, diff
from afd.eval.style import STYLE_KEYS

# The retention goal: each total at most this far below the base on the original domain.
RETENTION_TOLERANCE = 2.0
RETAINED = (("physics", "physical_consistency", "PC"), ("physics", "total", "physics total"),
            ("general", "total", "general total"))
STYLE_COLUMNS = (*(("style", k, k.replace("_", " ")) for k in STYLE_KEYS),
                 ("physics", "physical_consistency", "PC"), ("physics", "total", "physics total"),
                 ("general", "total", "general total"))


def collect_retention(cfg, jobs, done: dict, read) -> dict:
    """``results.json``'s ``retention`` from the finished ``retain`` jobs."""
    by_id = {j.id: j for j in jobs}
    runs = []
    for j in jobs:
        if j.kind != "retain" or j.id not in done or not j.tags:
            continue
        of = by_id.get(j.tags[0].removeprefix("retain:"))
        if of is None:
            continue
        for s in (cfg.seeds if of.kind == "base" else [of.seed]):
            runs.append({"method": of.method, "family": of.family, "seed": s, "eval": read(j), "id": j.id})
    return {"splits": list(cfg.retention_splits), "runs": runs}


def _fmt(st: Stat | None, digits: int = 1) -> str:
    if st is None:
        return "-"
    sd = f" ± {st.sd:.{digits}f}" if math.isfinite(st.sd) else ""
    return f"{st.mean:.{digits}f}{sd}"


def style_markdown(res: dict, cfg, method_stat) -> list[str]:
    """report.md's style table: every row of the main eval that scored a stylised prompt.
    ``method_stat(res, family, method, group, key)`` -> Stat | None (afd.reproduce.claims)."""
    world = [(name, (res.get("world") or {}).get(key)) for key, name in (("teacher", "world: real (teacher)"),
                                                                          ("loose", "world: loose"))]
    rows = [(name, [_fmt(Stat(ev["groups"][g][k], float("nan"), 1, float("nan")))
                    if (ev["groups"].get(g) or {}).get(k) is not None else "-" for g, k, _ in STYLE_COLUMNS])
            for name, ev in world if ev and ev["groups"].get("style")]
    for fam in cfg.families:
        for m in cfg.methods:
            cells = [method_stat(res, fam, m, g, k) for g, k, _ in STYLE_COLUMNS]
            if cells[0] is not None:
                n = len([r for r in res["runs"] if r["family"] == fam and r["method"] == m])
                rows.append((f"{fam} / {m} (n={1 if m == 'base' else n})", [_fmt(c) for c in cells]))
    if not any(name.startswith(tuple(cfg.families)) for name, _ in rows):
        return []
    head = "| | " + " | ".join(lab for _, _, lab in STYLE_COLUMNS) + " |"
    return ["## The new domain: style adherence (Fig. 4 analog)", "",
            f"On {', '.join(cfg.eval_splits)} (afd eval --split; docs/style.md): style adherence and its three "
            "parts (0-100; the world's own cartoon clips read about 96, plain clips about 2), with the physics "
            "and general measures on the same clips. Mean ± seed std. The strips at the end of this report "
            "(teacher | base | adapted) are the Fig. 4 analog.", "",
            head, "|---" * (len(STYLE_COLUMNS) + 1) + "|",
            *[f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows], ""]


def retention_markdown(res: dict, cfg, method_stat) -> list[str]:
    """report.md's retention table: each run on the original domain against its family's base."""
    ret = res.get("retention") or {}
    if not ret.get("runs"):
        return []
    view = {"runs": ret["runs"]}
    lines = ["## What is kept of the original domain", "",
             f"Every base and run also scored on {', '.join(ret['splits'])}, the domain the bases were trained "
             f"on. Change against the family's base, ± 2 standard errors; the goal is each total at most "
             f"{RETENTION_TOLERANCE:g} below the base ('kept'), 'lost' when the drop is larger and beyond noise.", "",
             "| row | " + " | ".join(lab for _, _, lab in RETAINED) + " | physics kept | general kept |",
             "|---" * (len(RETAINED) + 3) + "|"]
    for fam in cfg.families:
        base = {lab: method_stat(view, fam, "base", g, k) for g, k, lab in RETAINED}
        if any(v is not None for v in base.values()):
            lines.append(f"| {fam} / base | " + " | ".join(_fmt(base[lab]) for _, _, lab in RETAINED) + " | | |")
        for m in cfg.methods:
            if m == "base":
                continue
            cells, kept = [], {"physics total": "-", "general total": "-"}
            for g, k, lab in RETAINED:
                a = method_stat(view, fam, m, g, k)
                if a is None or base[lab] is None:
                    cells.append("-")
                    continue
                d = diff(a, base[lab])
                cells.append(f"{_fmt(a)} ({d.text()})")
                if lab in kept:
                    kept[lab] = "kept" if d.d >= -RETENTION_TOLERANCE or not d.above_noise else "lost"
            if any(c != "-" for c in cells):
                lines.append(f"| {fam} / {m} | " + " | ".join(cells) + f" | {kept['physics total']} | "
                             f"{kept['general total']} |")
    return lines + [""]
