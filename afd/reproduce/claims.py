"""What the finished reproduction says, read against its noise: each method against the base and
against AFD, the goals set for AFD, and the paper's claims one by one, each with the rule that
decides it. Everything here is computed from ``results.json``; report.md only prints it, so the
words change when the numbers do.

Noise model. A method's row is the mean over its seeds; its ``se`` is the seed standard deviation
over sqrt(n) (n >= 2 seeds). The base has no training randomness (one eval stands for every seed)
and a sweep point is one run, so their ``se`` is the eval's own bootstrap standard error. A
difference is *above noise* when it exceeds 2 x sqrt(se_a^2 + se_b^2); otherwise it is *within
noise*. The goal "beats a baseline by more than 2 seed standard deviations" uses the pooled
seed standard deviation sqrt((sd_a^2 + sd_b^2) / 2) instead.
"""

from __future__ import annotations

import math

import numpy as np

from afd.eval.compare import Diff, Stat, diff, eval_se, single, value
from afd.reproduce.config import row_methods, row_update
from afd.reproduce.long import long_claims

BASELINES = ("sft", "gan", "dmd")
# The goals set for AFD (reported as measured, never met by changing a metric).
GAP_GOAL = 0.70  # share of the base -> teacher physical-consistency gap closed
GENERAL_TOLERANCE = 2.0  # general total within this many points of the base
MARGIN_GOAL = 2.0  # physics-total margin over each baseline, in pooled seed standard deviations


def method_stat(res: dict, family: str, method: str, group: str, key: str) -> Stat | None:
    """A family x method row of ``res["runs"]`` (None if it has no finished run)."""
    runs = [r for r in res["runs"] if r["family"] == family and r["method"] == method]
    if not runs:
        return None
    if method == "base":
        return single(runs[0]["eval"], group, key)
    xs = np.asarray([value(r["eval"], group, key) for r in runs], float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return None
    if xs.size == 1:
        return Stat(float(xs[0]), float("nan"), 1, eval_se(runs[0]["eval"], group, key))
    sd = float(xs.std(ddof=1))
    return Stat(float(xs.mean()), sd, int(xs.size), sd / math.sqrt(xs.size))


# What the against-the-base table and the verdicts compare: (group, key, label).
COMPARED = [("physics", "physical_consistency", "PC"), ("physics", "total", "physics total"),
            ("general", "total", "general total")]


def against_base(res: dict, families, methods) -> list[dict]:
    """Per family x trained method: the difference to the base on each COMPARED measure."""
    rows = []
    for fam in families:
        for m in methods:
            if m == "base":
                continue
            cells = {}
            for g, k, lab in COMPARED:
                a, b = method_stat(res, fam, m, g, k), method_stat(res, fam, "base", g, k)
                cells[lab] = diff(a, b) if a and b else None
            if any(cells.values()):
                rows.append({"family": fam, "method": m, "cells": cells})
    return rows


def method_of(res: dict, methods) -> dict[str, str]:
    """Each row's registered method: a variant's (from the config saved in ``res``), else itself."""
    return row_methods(res.get("config"), methods)


def afd_rows(res: dict, methods) -> list[str]:
    """The rows that run AFD (the method ``afd`` or a variant of it), in config order."""
    return [m for m, k in method_of(res, methods).items() if k == "afd"]


def paper_row(res: dict, family: str, methods) -> str | None:
    """AFD (paper) on ``family``: the first AFD row whose runs used the paper's update (NFT); an
    older results.json without recorded updates takes the row named ``afd``."""
    rows = afd_rows(res, methods)
    return next((m for m in rows if row_update(res, family, m) == "nft"),
                "afd" if "afd" in rows and row_update(res, family, "afd") is None else None)


def baseline_rows(res: dict, methods) -> list[str]:
    """The rows that run SFT, GAN or DMD (or variants of them), in BASELINES order."""
    kind = method_of(res, methods)
    return [m for b in BASELINES for m in methods if kind[m] == b]


def _own_overrides(res: dict, row: str) -> set[str]:
    """A variant row's overrides beyond its method's config, the discriminator's left out."""
    variants = (res.get("config") or {}).get("variants") or {}
    return {o for o in variants.get(row, [row])[1:] if not o.startswith("disc.")}


def oracle_row(res: dict, family: str, methods, row: str) -> str | None:
    """The oracle row to read AFD row ``row``'s gain against on ``family``: one with finished runs
    that ran the same student update, preferably with the same update options (a row with an
    extra option such as a stronger prior is a different update)."""
    kind, upd = method_of(res, methods), row_update(res, family, row)
    found = [m for m in methods if kind[m] == "oracle" and row_update(res, family, m) == upd
             and method_stat(res, family, m, "physics", "physical_consistency")]
    same = [m for m in found if _own_overrides(res, m) == _own_overrides(res, row)]
    return (same or found or [None])[0]


def afd_goals(res: dict, family: str, methods=None, row: str | None = None) -> dict | None:
    """The three goals set for AFD on one family, for the AFD row ``row`` (default: AFD (paper),
    :func:`paper_row`), with the numbers behind each verdict. Its oracle is :func:`oracle_row`;
    its baselines are every SFT, GAN and DMD row of ``methods`` (default: the rows of ``res``)."""
    if methods is None:
        methods = list(dict.fromkeys(r["method"] for r in res["runs"]))
    row = row or paper_row(res, family, methods)
    if row is None:
        return None
    afd = method_stat(res, family, row, "physics", "physical_consistency")
    base = method_stat(res, family, "base", "physics", "physical_consistency")
    teacher = single(res.get("teacher"), "physics", "physical_consistency")
    if not (afd and base):
        return None
    out: dict = {"family": family, "row": row, "update": row_update(res, family, row)}
    gain = diff(afd, base)
    out["pc_gain"] = gain
    if teacher and teacher.mean > base.mean:
        out["gap_closed"] = gain.d / (teacher.mean - base.mean)
    paired = oracle_row(res, family, methods, row)
    oracle = method_stat(res, family, paired, "physics", "physical_consistency") if paired else None
    if oracle:
        og = diff(oracle, base)
        out["oracle_row"] = paired
        out["oracle_gain"] = og
        # A fraction of a gain that is itself noise means nothing.
        out["oracle_fraction"] = gain.d / og.d if og.above_noise and og.d > 0 else None
    ga, gb = (method_stat(res, family, m, "general", "total") for m in (row, "base"))
    if ga and gb:
        out["general_change"] = diff(ga, gb)
    out["baselines"] = {}
    for m in baseline_rows(res, methods):
        a, b = (method_stat(res, family, x, "physics", "total") for x in (row, m))
        if a and b:
            out["baselines"][m] = diff(a, b)
    gc = out.get("gap_closed")
    out["met"] = {
        "gap": gc is not None and gc >= GAP_GOAL,
        "general": "general_change" in out and out["general_change"].d >= -GENERAL_TOLERANCE,
        "baselines": bool(out["baselines"]) and all(
            math.isfinite(d.margin_sd) and d.margin_sd > MARGIN_GOAL for d in out["baselines"].values()),
    }
    return out


def all_goals(res: dict, families, methods) -> list[dict]:
    """afd_goals for every family x AFD row that has finished runs."""
    return [g for f in families for r in afd_rows(res, methods) if (g := afd_goals(res, f, methods, r))]


def _stats(res: dict, family: str, methods, group: str, key: str) -> dict[str, Stat]:
    """The finished family x method rows among ``methods``."""
    stats = {m: method_stat(res, family, m, group, key) for m in methods}
    return {m: s for m, s in stats.items() if s}


# Fig. 1's two claims: (label, eval group) of the measure that longer SFT is said to lower.
SFT_LENGTH_CLAIMS = (("physics", "physics"), ("general quality", "general"))


def sft_length_claims(points: list[dict]) -> list[tuple[str, str, str]]:
    """Fig. 1: the paper says longer SFT *lowers* physics (VideoPhy-2) and general quality
    (VBench). Each is its own claim, decided on the SFT-steps sweep (``points``: {"steps", "eval"},
    the base as 0 steps): it holds when the longest run's total is below the best shorter run's
    by more than noise (a decline after a peak), and does not hold otherwise: a total that still
    rises at the longest run, or a fall inside the noise."""
    out = []
    for label, group in SFT_LENGTH_CLAIMS:
        claim = f"Fig. 1 ({label}): longer SFT lowers the {group} total"
        pts = [(e["steps"], single(e["eval"], group, "total")) for e in points]
        pts = sorted(((k, s) for k, s in pts if s), key=lambda x: x[0])
        if len(pts) < 3:
            out.append((claim, "not measured", "fewer than 3 SFT lengths"))
            continue
        (k_last, last), earlier = pts[-1], pts[:-1]
        k_best, best = max(earlier, key=lambda x: x[1].mean)
        d = diff(last, best)
        verdict = "holds" if d.d < 0 and d.above_noise else "does not hold"
        out.append((claim, verdict, ", ".join(f"{k} updates: {s.mean:.1f}" for k, s in pts)
                    + f" ({group} total); {k_last} updates - best shorter run ({k_best}) = {d.text()}"))
    return out


def paper_claims(res: dict, families, methods) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for each of the paper's claims that this reproduction tests.
    verdict is "holds", "does not hold" or "not measured"."""
    out = []
    for fam in families:
        # The paper's claims are about its own method: AFD with the paper's update.
        afd = paper_row(res, fam, methods)
        stats = _stats(res, fam, [afd, *baseline_rows(res, methods)] if afd else [], "physics", "total")
        if afd not in stats or len(stats) < 2:
            ran = [m for m in afd_rows(res, methods) if method_stat(res, fam, m, "physics", "total")]
            why = ("no AFD row ran the paper's update (nft)" if afd is None and ran
                   else "AFD (paper) or every baseline is missing")
            out.append((f"Tables 1-2 ({fam}): AFD has the best physics total among adapted methods",
                        "not measured", why))
            continue
        name = "AFD" if afd == "afd" else afd
        others = {m: diff(stats[afd], s) for m, s in stats.items() if m != afd}
        holds = all(d.d > 0 and d.above_noise for d in others.values())
        ev = "; ".join(f"{name} - {m.upper() if m in BASELINES else m} = {d.text()}" for m, d in others.items())
        out.append((f"Tables 1-2 ({fam}): AFD has the best physics total among adapted methods",
                    "holds" if holds else "does not hold", ev))
        b = method_stat(res, fam, "base", "physics", "physical_consistency")
        a = method_stat(res, fam, afd, "physics", "physical_consistency")
        if a and b:
            d = diff(a, b)
            out.append((f"Tables 1-2 ({fam}): AFD improves physical consistency over the base",
                        "holds" if d.d > 0 and d.above_noise else "does not hold", f"{name} - base = {d.text()}"))
        ga, gb = method_stat(res, fam, afd, "general", "total"), method_stat(res, fam, "base", "general", "total")
        if ga and gb:
            d = diff(ga, gb)
            out.append((f"Tables 1-2 ({fam}): AFD keeps general quality (general total within "
                        f"{GENERAL_TOLERANCE:g} points of the base or above)",
                        "holds" if d.d >= -GENERAL_TOLERANCE else "does not hold", f"{name} - base = {d.text()}"))
    sw = res["sweeps"]
    out += sft_length_claims(sw["sft_steps"])
    eta = [e for e in sw["eta_d"] if e.get("curves", {}).get("r_phi")]
    if len(eta) >= 3:
        pcs = {float(e["eta_d"]): single(e["eval"], "physics", "physical_consistency") for e in eta}
        finals = {float(e["eta_d"]): float(np.mean([x for x in e["curves"]["r_phi"][-5:] if x is not None] or [np.nan]))
                  for e in eta}
        lrs = sorted(pcs)
        best = max(lrs, key=lambda v: pcs[v].mean if pcs[v] else -1)
        interior = lrs[0] < best < lrs[-1]
        above = all(diff(pcs[best], pcs[v]).above_noise for v in (lrs[0], lrs[-1]) if pcs[v] and v != best)
        out.append(("Fig. 5: an intermediate eta_D gives the best result (extremes saturate r_phi)",
                    "holds" if interior and above else "does not hold",
                    "PC " + ", ".join(f"eta_D {v:g}: {pcs[v].mean:.1f}" for v in lrs if pcs[v])
                    + "; final r_phi " + ", ".join(f"{v:g}: {finals[v]:.2f}" for v in lrs)))
    else:
        out.append(("Fig. 5: an intermediate eta_D gives the best result", "not measured", "fewer than 3 eta_D points"))
    losses = {e["loss"]: e for e in sw["disc_loss"]}
    if {"bt", "gan"} <= set(losses):
        a, b = (single(losses[x]["eval"], "physics", "dynamic_degree") for x in ("bt", "gan"))
        pa, pb = (single(losses[x]["eval"], "physics", "total") for x in ("bt", "gan"))
        d, dp = diff(a, b), diff(pa, pb)
        out.append(("Fig. 6: the Bradley-Terry D loss beats the GAN-style loss (mainly dynamic degree)",
                    "holds" if d.d > 0 and d.above_noise else "does not hold",
                    f"BT - GAN: dynamic degree {d.text()}, physics total {dp.text()}"))
    else:
        out.append(("Fig. 6: the Bradley-Terry D loss beats the GAN-style loss", "not measured", "a loss is missing"))
    return out + long_claims(res, families, methods)


# ----- results.json and report.md -----

def _plain(x):
    """Diff / dict / list -> JSON-ready values (Diff as {d, se, pooled_sd, above_noise, margin_sd})."""
    if isinstance(x, Diff):
        return {"d": x.d, "se": x.se, "pooled_sd": x.pooled_sd, "above_noise": x.above_noise,
                "margin_sd": x.margin_sd}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _against_base(res: dict, family: str, method: str, group: str, key: str) -> Diff | None:
    """A finished row minus its family's base on one measure (None if either is missing)."""
    a, b = method_stat(res, family, method, group, key), method_stat(res, family, "base", group, key)
    return diff(a, b) if a and b else None


def gate_rows(res: dict, families, methods, gate) -> list[dict]:
    """Per family x trained row: the gate's measures against the base (``gate``: a
    ``afd.reproduce.config.GateConfig``) and whether the row passes. A row passes when its mean PC
    gain is at least ``min_pc_gain``, its mean general change at least ``-max_general_drop`` and
    its mean dynamic degree at least ``min_dynamic_degree``; the ± (2 SE) is printed beside each
    so a pass inside its own noise reads as such."""
    rows = []
    for fam in families:
        for m in methods:
            runs = [r for r in res["runs"] if r["family"] == fam and r["method"] == m]
            if m == "base" or not runs:
                continue
            pc, gen = (_against_base(res, fam, m, g, k)
                       for g, k in (("physics", "physical_consistency"), ("general", "total")))
            dyn = method_stat(res, fam, m, "physics", "dynamic_degree")
            fails = []
            if pc is None or pc.d < gate.min_pc_gain:
                fails.append(f"PC gain < {gate.min_pc_gain:g}")
            if gen is None or gen.d < -gate.max_general_drop:
                fails.append(f"general drop > {gate.max_general_drop:g}")
            if dyn is None or dyn.mean < gate.min_dynamic_degree:
                fails.append(f"dynamic degree < {gate.min_dynamic_degree:g}")
            walls = [r["wall_s"] for r in runs if math.isfinite(r.get("wall_s", float("nan")))]
            rows.append({"family": fam, "method": m, "update": runs[0].get("update"), "seeds": len(runs),
                         "pc": pc, "general": gen, "dynamic_degree": dyn.mean if dyn else None,
                         "minutes": float(np.mean(walls)) / 60 if walls else None,
                         "passes": not fails, "fails": fails})
    return rows


def gate_markdown(res: dict, families, methods, gate) -> list[str]:
    """report.md's gate section (empty when the gate is off)."""
    if not gate.enabled:
        return []
    lines = ["## The gate", "",
             f"A row passes with a mean PC gain of at least +{gate.min_pc_gain:g}, the general total at most "
             f"{gate.max_general_drop:g} below the base and a dynamic degree of at least "
             f"{gate.min_dynamic_degree:g}. ± is 2 standard errors (over seeds for n >= 2, the eval's bootstrap "
             "error for one run); minutes are the mean wall time of a run on this machine.", "",
             "| family | row | update | seeds | PC change | general change | dynamic degree | minutes | gate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in gate_rows(res, families, methods, gate):
        lines.append(f"| {r['family']} | {r['method']} | {r['update'] or '-'} | {r['seeds']} | "
                     f"{r['pc'].text() if r['pc'] else '-'} | {r['general'].text() if r['general'] else '-'} | "
                     + (f"{r['dynamic_degree']:.1f}" if r["dynamic_degree"] is not None else "-") + " | "
                     + (f"{r['minutes']:.0f}" if r["minutes"] is not None else "-") + " | "
                     + ("**passes**" if r["passes"] else "fails: " + ", ".join(r["fails"])) + " |")
    return lines + [""]


def verdicts(res: dict, families, methods, gate=None) -> dict:
    """Everything this module decides, JSON-ready (results.json's ``verdicts``)."""
    goals = all_goals(res, families, methods)
    out = {"goals": _plain(goals), "claims": [{"claim": c, "verdict": v, "evidence": e}
                                              for c, v, e in paper_claims(res, families, methods)],
           "against_base": _plain(against_base(res, families, methods))}
    if gate is not None and gate.enabled:
        out["gate"] = _plain(gate_rows(res, families, methods, gate))
    return out


def _vs(d: Diff) -> str:
    return f"{d.d:+.1f} ({d.margin_sd:+.1f})" if math.isfinite(d.margin_sd) else f"{d.d:+.1f} (no seed sd)"


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def markdown(res: dict, families, methods) -> list[str]:
    """report.md's verdict sections: against the base, the goals set for AFD, the paper's claims."""
    lines = ["## Against the base", "",
             "Each adapted method minus its family's base; ± is 2 standard errors (seed std / sqrt(n) for "
             "a trained row of n >= 2 seeds; the eval's bootstrap error for the base and for a single run). "
             "A difference inside its ± is marked *within noise*.", "",
             "| run | " + " | ".join(lab for *_, lab in COMPARED) + " |", "|---" * (len(COMPARED) + 1) + "|"]
    for row in against_base(res, families, methods):
        lines.append(f"| {row['family']} / {row['method']} | "
                     + " | ".join(c.text() if c else "-" for c in row["cells"].values()) + " |")
    lines += ["", "## AFD against its goals", "",
              f"Goals: close at least {GAP_GOAL:.0%} of the base -> teacher physical-consistency gap; keep the "
              f"general total within {GENERAL_TOLERANCE:g} points of the base; beat SFT, GAN and DMD on the "
              f"physics total by more than {MARGIN_GOAL:g} pooled seed standard deviations. The oracle "
              "(AFD's update with exact-physics weights) is the ceiling AFD's gain is read against.", "",
              "| family / AFD row (update) | PC gain | gap closed | oracle's PC gain (same update) | AFD / oracle "
              "| general change | physics total vs each baseline (margin in pooled seed sd) | goals met |",
              "|---|---|---|---|---|---|---|---|"]
    for g in all_goals(res, families, methods):
        vs = "; ".join(f"{m}: {_vs(d)}" for m, d in g["baselines"].items()) or "-"
        met = ", ".join(k for k, ok in g["met"].items() if ok) or "none"
        og = g.get("oracle_gain")
        upd = f" ({g['update']})" if g["update"] else ""  # older results.json record no update
        lines.append(f"| {g['family']} / {g['row']}{upd} | {g['pc_gain'].text()} | "
                     f"{_pct(g.get('gap_closed'))} | {og.text() if og else '-'} | "
                     f"{_pct(g.get('oracle_fraction')) if og else '-'} | "
                     f"{g['general_change'].text() if 'general_change' in g else '-'} | {vs} | {met} |")
    lines += ["", "AFD / oracle is left blank (-) when the oracle's own gain is within noise: a fraction of "
              "noise means nothing.", "", "## The paper's claims on this testbed", "",
              "Decided by the rules in `afd/reproduce/claims.py` from the numbers above (sweep points are "
              "single runs, read against their eval's bootstrap error).", "",
              "| claim | on this testbed | evidence |", "|---|---|---|"]
    lines += [f"| {c} | **{v}** | {e} |" for c, v, e in paper_claims(res, families, methods)]
    return lines + [""]
