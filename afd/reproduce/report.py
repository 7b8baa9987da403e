"""Read the finished jobs of a reproduction and write ``results.json``, ``report.md``, the
figures (Fig. 1, 5, 6 analogs and the teacher-budget curve) and per-method sample strips."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from afd.config import config_to_dict
from afd.methods.registry import section_users
from afd.reproduce import claims
from afd.reproduce.config import REFERENCE_METHODS, ReproduceConfig
from afd.reproduce.domain import collect_retention, retention_markdown, style_markdown
from afd.reproduce.jobs import EVAL_FILE, JOB_FILE, Job
from afd.reproduce.long import collect_long, long_markdown
from afd.world.splits import load_split

# Table 1 analog: (group, key, header, higher is better)
TABLE1 = [
    ("physics", "physical_consistency", "PC", True),
    ("physics", "gravity_error", "grav. err", False),
    ("physics", "bounce_accuracy", "bounce", True),
    ("physics", "dynamic_degree", "dynamic", True),
    ("physics", "motion_smoothness", "smooth", True),
    ("physics", "temporal_flickering", "flicker", True),
    ("physics", "total", "physics total", True),
    ("general", "total", "general total", True),
]
# Table 2 analog: physical consistency and a motion-quality score (defined in motion_quality).
TABLE2 = [("pc", "physical consistency", True), ("mq", "motion quality", True),
          ("grav", "gravity error", False), ("bounce", "bounce accuracy", True)]  # columns of table2()
FIG6_KEYS = [("physical_consistency", "PC"), ("bounce_accuracy", "bounce"), ("dynamic_degree", "dynamic"),
             ("motion_smoothness", "smooth"), ("temporal_flickering", "flicker"), ("gravity_score", "100(1-grav err)")]
CURVE_KEYS = ("r_phi", "d_acc", "reward_fidelity", "score_fidelity", "r_phi_p10", "r_phi_p90", "r_phi_sat")
# What the weights rank by (afd.train.fidelity): the true physics, then the rendering cues.
FIDELITY_KEYS = ("reward_fidelity", "oracle_fidelity", "cue_visible", "cue_single_object", "cue_steady_size",
                 "cue_steady_motion", "pick_lift", "pick_lift_max")


def metric(ev: dict, group: str, key: str) -> float:
    g = ev["groups"].get(group) or {}
    v = g.get(key)
    return float("nan") if v is None else float(v)


def motion_quality(ev: dict) -> float:
    """Our stand-in for VideoAlign-MQ (a learned motion-quality judge we cannot run): the mean of
    dynamic degree, motion smoothness and 100 * (1 - gravity error) on physics-eval, 0-100."""
    parts = [metric(ev, "physics", "dynamic_degree"), metric(ev, "physics", "motion_smoothness"),
             100 * (1 - metric(ev, "physics", "gravity_error"))]
    return float(np.mean(parts))


def _read_json(path: Path):
    return json.loads(path.read_text())


def run_config(job: Job, work_dir: str | Path):
    """The resolved AdaptConfig a finished training job ran with (its saved ``config.yaml``)."""
    from afd.config import load_config
    from afd.train.config import AdaptConfig

    return load_config(AdaptConfig, job.dir(work_dir) / "config.yaml")


def teacher_clips(job: Job, work_dir: str | Path) -> int:
    """Teacher clips the run may use: its budget (prompts x clips per prompt unless capped)."""
    if job.kind != "train":
        return 0
    cfg = run_config(job, work_dir)
    if cfg.teacher.budget is not None:
        return int(cfg.teacher.budget)
    return adaptation_prompts(cfg) * cfg.teacher.clips_per_prompt


def adaptation_prompts(cfg) -> int:
    """How many prompts a run adapts on (and may buy teacher clips for)."""
    return cfg.train.pool_size or len(load_split(cfg.train.split))


def paid_clips(run_dir: Path, key: str = "teacher_calls_paid") -> int | None:
    """Teacher clips a finished run actually paid for (its last metrics row), None if unlogged;
    ``key="teacher_clips_used"``: the distinct clips it drew on, paid or read from the shared
    cache (a clip another run paid for is used here without being paid again)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    last = None
    for line in path.read_text().splitlines():
        if line.strip():
            last = json.loads(line)
    return None if last is None or key not in last else int(last[key])


def curves(run_dir: Path) -> dict[str, list]:
    """Per-iteration discriminator curves from a run's metrics.jsonl."""
    out = {k: [] for k in ("step", *CURVE_KEYS)}
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "r_phi" not in row:
            continue
        out["step"].append(row.get("step"))
        for k in CURVE_KEYS:
            v = row.get(k)
            out[k].append(None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
    return out


def fidelity_summary(run_dir: Path) -> dict[str, float | None]:
    """Mean of each FIDELITY_KEYS statistic over the second half of a run's iterations (once D has
    trained); None where the run did not log it."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = rows[len(rows) // 2:]
    out: dict[str, float | None] = {}
    for k in FIDELITY_KEYS:
        xs = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        out[k] = float(np.mean(xs)) if xs else None
    return out


def collect(cfg: ReproduceConfig, jobs: list[Job]) -> dict:
    """Every number of the finished jobs: results.json (docs/training.md, "Reproducing the paper")."""
    work = Path(cfg.work_dir)
    by_tag: dict[str, list[Job]] = {}
    for j in jobs:
        for t in j.tags:
            by_tag.setdefault(t, []).append(j)
    done = {j.id: j for j in jobs if j.done(work)}

    def ev(j: Job) -> dict:
        return _read_json(j.dir(work) / EVAL_FILE)

    def wall(j: Job) -> float:
        p = j.dir(work) / JOB_FILE
        return float(_read_json(p)["wall_s"]) if p.exists() else float("nan")

    def copied_from(j: Job) -> str | None:
        p = j.dir(work) / JOB_FILE
        return _read_json(p).get("copied_from") if p.exists() else None

    res: dict = {"name": cfg.name, "config": config_to_dict(cfg), "teacher": None, "loose": None, "runs": [],
                 "sweeps": {"sft_steps": [], "eta_d": [], "disc_loss": [], "budget": []},
                 "missing": [j.id for j in jobs if j.id not in done]}
    for j in by_tag.get("reference", []):
        if j.id in done:
            res["teacher" if j.id == "teacher" else "loose"] = ev(j)
    for j in by_tag.get("main", []):
        if j.id not in done:
            continue
        seeds = cfg.seeds if j.kind == "base" else [j.seed]
        for k, s in enumerate(seeds):
            # The base has no training randomness: one deterministic eval stands for every seed,
            # and its wall time is counted once.
            res["runs"].append({"method": j.method, "family": j.family, "seed": s, "eval": ev(j),
                                "update": update_of(cfg, j, work),
                                "teacher_clips": teacher_clips(j, work), "wall_s": wall(j) if k == 0 else 0.0,
                                "lr": _resolved_value(j, work, "train.lr") if j.kind == "train" else None,
                                "id": j.id, "copied_from": copied_from(j),
                                "fidelity": fidelity_summary(j.dir(work)) if j.kind == "train" else None})
    sw = cfg.sweeps
    base_sweep = done.get(f"base-{sw.family}")
    if base_sweep and by_tag.get("sweep:sft_steps"):
        res["sweeps"]["sft_steps"].append({"steps": 0, "eval": ev(base_sweep), "id": base_sweep.id})
    for j in by_tag.get("sweep:sft_steps", []):
        if j.id in done:
            steps = int(next((o.split("=")[1] for o in j.overrides if o.startswith("train.steps=")), cfg.steps))
            res["sweeps"]["sft_steps"].append({"steps": steps, "eval": ev(j), "id": j.id})
    res["sweeps"]["sft_steps"].sort(key=lambda r: r["steps"])

    for tag, key, sweep, field_name in (("sweep:eta_d", "disc.lr", "eta_d", "eta_d"),
                                        ("sweep:disc_loss", "disc.loss", "disc_loss", "loss")):
        for j in by_tag.get(tag, []):
            if j.id in done:
                res["sweeps"][sweep].append({field_name: _resolved_value(j, work, key), "eval": ev(j),
                                             "curves": curves(j.dir(work)), "id": j.id})
    res["sweeps"]["eta_d"].sort(key=lambda r: float(r["eta_d"]))
    for j in by_tag.get("sweep:budget", []):
        if j.id in done:
            run_cfg = run_config(j, work)
            budget, paid = teacher_clips(j, work), paid_clips(j.dir(work))
            used = paid_clips(j.dir(work), "teacher_clips_used")
            if paid is not None and paid > budget:
                raise ValueError(f"{j.dir(work)}: paid for {paid} teacher clips, over its budget of {budget}")
            if used is not None and used > budget:
                raise ValueError(f"{j.dir(work)}: drew on {used} teacher clips, over its budget of {budget}")
            res["sweeps"]["budget"].append({"method": j.method, "prompts": adaptation_prompts(run_cfg),
                                            "clips_per_prompt": run_cfg.teacher.clips_per_prompt,
                                            "teacher_clips": budget, "paid": paid, "used": used, "eval": ev(j),
                                            "id": j.id})
    res["sweeps"]["budget"].sort(key=lambda r: (r["method"], r["teacher_clips"]))
    if cfg.eval_frames:
        res["long"] = collect_long(cfg, jobs, done, ev)
    if cfg.retention_splits:
        res["retention"] = collect_retention(cfg, jobs, done, ev)
    return res


# Methods whose student update is the ``afd.update`` option (afd/methods/afd_config.py).
UPDATE_METHODS = section_users("afd")


def update_of(cfg: ReproduceConfig, job: Job, work_dir: str | Path) -> str | None:
    """The student update a finished training job ran ("nft", the paper's; "reward-filtered", ...),
    None for methods without that option."""
    if job.kind != "train" or cfg.base_method(job.method) not in UPDATE_METHODS:
        return None
    return _resolved_value(job, work_dir, "afd.update")


def _resolved_value(job: Job, work_dir: str | Path, dotted: str):
    cfg = config_to_dict(run_config(job, work_dir))
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


# ----- tables -----

def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray([x for x in xs if x is not None and math.isfinite(x)], float)
    if a.size == 0:
        return float("nan"), float("nan")
    # One value has no spread to report (nan prints as no "± ..." at all).
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def _cell(m: float, s: float | None, digits: int, bold: bool) -> str:
    if not math.isfinite(m):
        return "-"
    txt = f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None and math.isfinite(s) else "")
    return f"**{txt}**" if bold else txt


def _table(rows: list[tuple[str, list[tuple[float, float | None]]]], headers: list[str], higher: list[bool],
           digits: list[int], ref_rows: int, unranked: frozenset[int] = frozenset()) -> str:
    """Markdown table; the best model row per column (rows after the first ``ref_rows``, except the
    indices in ``unranked``) in bold, with every row that shows the same value at the printed
    precision (a tie on the page)."""
    ranked = [i for i in range(ref_rows, len(rows)) if i not in unranked]
    best = []
    for c in range(len(headers)):
        vals = [rows[i][1][c][0] for i in ranked if math.isfinite(rows[i][1][c][0])]
        best.append((max(vals) if higher[c] else min(vals)) if vals else None)
    out = ["| | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for i, (name, cells) in enumerate(rows):
        out.append(f"| {name} | " + " | ".join(
            _cell(m, s, digits[c], i in ranked and best[c] is not None and math.isfinite(m)
                  and f"{m:.{digits[c]}f}" == f"{best[c]:.{digits[c]}f}")
            for c, (m, s) in enumerate(cells)) + " |")
    return "\n".join(out)


def _group_runs(res: dict) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in res["runs"]:
        groups.setdefault((r["family"], r["method"]), []).append(r)
    return groups


def _rows(res: dict, cfg: ReproduceConfig, values) -> tuple[list, int, frozenset[int]]:
    """World rows (no spread), then one mean ± std row per family x method; ``values(eval)`` gives
    a row's columns. Returns (rows, number of world rows, indices of the reference-method rows,
    which are shown but not ranked)."""
    rows = [(f"world: {'real (teacher)' if name == 'teacher' else 'loose'}", [(v, None) for v in values(res[name])])
            for name in ("teacher", "loose") if res[name]]
    refs = len(rows)
    unranked = set()
    groups = _group_runs(res)
    for fam in cfg.families:
        for m in cfg.methods:
            runs = groups.get((fam, m), [])
            if runs:
                columns = zip(*(values(r["eval"]) for r in runs))
                if cfg.base_method(m) in REFERENCE_METHODS:
                    unranked.add(len(rows))
                rows.append((f"{fam} / {m} (n={len(runs)})", [_mean_std(list(c)) for c in columns]))
    return rows, refs, frozenset(unranked)


def table1(res: dict, cfg: ReproduceConfig) -> str:
    rows, refs, unranked = _rows(res, cfg, lambda ev: [metric(ev, g, k) for g, k, _, _ in TABLE1])
    return _table(rows, [h for _, _, h, _ in TABLE1], [hb for *_, hb in TABLE1],
                  [3 if k == "gravity_error" else 1 for _, k, _, _ in TABLE1], refs, unranked)


def table2(res: dict, cfg: ReproduceConfig) -> str:
    def values(ev):
        return [metric(ev, "physics", "physical_consistency"), motion_quality(ev),
                metric(ev, "physics", "gravity_error"), metric(ev, "physics", "bounce_accuracy")]

    rows, refs, unranked = _rows(res, cfg, values)
    return _table(rows, [h for _, h, _ in TABLE2], [hb for *_, hb in TABLE2], [1, 1, 3, 1], refs, unranked)


def fidelity_table(res: dict, cfg: ReproduceConfig) -> str:
    """Per family x method with a D: mean (over seeds that logged it) of each FIDELITY_KEYS statistic."""
    lines = ["| run | " + " | ".join(FIDELITY_KEYS) + " |", "|---" * (len(FIDELITY_KEYS) + 1) + "|"]
    groups = _group_runs(res)
    for fam in cfg.families:
        for m in cfg.methods:
            fids = [r["fidelity"] for r in groups.get((fam, m), []) if r.get("fidelity")]
            cells = []
            for k in FIDELITY_KEYS:
                xs = [f[k] for f in fids if f.get(k) is not None]
                cells.append(f"{np.mean(xs):+.2f} (n={len(xs)})" if xs else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {fam} / {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sweep_table(entries: list[dict], key: str, label: str) -> str:
    lines = [f"| {label} | PC | physics total | general total | final r_phi | mean reward fidelity |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        c = e.get("curves") or {}
        r = [x for x in c.get("r_phi", []) if x is not None]
        fid = [x for x in c.get("reward_fidelity", []) if x is not None]
        lines.append(f"| {e[key]} | {metric(e['eval'], 'physics', 'physical_consistency'):.1f} | "
                     f"{metric(e['eval'], 'physics', 'total'):.1f} | {metric(e['eval'], 'general', 'total'):.1f} | "
                     f"{np.mean(r[-5:]) if r else float('nan'):.3f} | {np.mean(fid) if fid else float('nan'):.3f} |")
    return "\n".join(lines)


# ----- figures -----

def _smooth(xs: list, k: int = 5) -> np.ndarray:
    a = np.asarray([np.nan if x is None else x for x in xs], float)
    if a.size < k:
        return a
    return np.convolve(np.nan_to_num(a, nan=np.nanmean(a)), np.ones(k) / k, mode="valid")


def figures(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    sw = res["sweeps"]
    if sw["sft_steps"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [e["steps"] for e in sw["sft_steps"]]
        for g, k, lab in (("physics", "total", "physics total"), ("general", "total", "general total"),
                          ("physics", "physical_consistency", "physical consistency")):
            ax.plot(xs, [metric(e["eval"], g, k) for e in sw["sft_steps"]], "o-", label=lab)
        ax.set_xlabel("SFT student updates (0 = base)")
        ax.set_ylabel("score (0-100)")
        ax.set_title("Fig. 1 analog: SFT steps sweep")
        ax.legend(fontsize=8)
        made.append(_save(fig, out / "fig1_sft_steps.png"))
    if sw["eta_d"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for e in sw["eta_d"]:
            c = e["curves"]
            y = _smooth(c["r_phi"])
            ax.plot(np.arange(len(y)) + (len(c["r_phi"]) - len(y)) // 2, y, label=f"eta_D = {e['eta_d']:g}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("r_phi on student rollouts (5-iter mean)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("Fig. 5 analog: discriminator learning rate")
        ax.legend(fontsize=8)
        made.append(_save(fig, out / "fig5_eta_d.png"))
    if sw["disc_loss"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(sw["disc_loss"])
        for i, e in enumerate(sw["disc_loss"]):
            vals = [100 * (1 - metric(e["eval"], "physics", "gravity_error")) if k == "gravity_score"
                    else metric(e["eval"], "physics", k) for k, _ in FIG6_KEYS]
            ax.bar(np.arange(len(FIG6_KEYS)) + i * width, vals, width, label=f"{e['loss']} loss")
        ax.set_xticks(np.arange(len(FIG6_KEYS)) + 0.4 - width / 2, [lab for _, lab in FIG6_KEYS], fontsize=8)
        ax.set_ylabel("score (0-100)")
        ax.set_title("Fig. 6 analog: BT vs GAN-style discriminator loss")
        ax.legend(fontsize=8)
        made.append(_save(fig, out / "fig6_disc_loss.png"))
    if sw["budget"]:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
        for m in sorted({e["method"] for e in sw["budget"]}):
            es = [e for e in sw["budget"] if e["method"] == m]
            xs = [e["teacher_clips"] for e in es]
            axes[0].plot(xs, [metric(e["eval"], "physics", "physical_consistency") for e in es], "o-", label=m)
            axes[1].plot(xs, [metric(e["eval"], "physics", "total") for e in es], "o-", label=m)
        for ax, lab in zip(axes, ("physical consistency", "physics total")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("teacher clips (budget)")
            ax.set_ylabel(lab)
            ax.legend(fontsize=8)
        fig.suptitle("Teacher budget: paid clips vs physics")
        made.append(_save(fig, out / "fig_budget.png"))
    return made


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def copy_strips(cfg: ReproduceConfig, jobs: list[Job], out: Path) -> list[str]:
    """The final teacher | base | student strip of each method's first-seed run, per family."""
    made = []
    for j in jobs:
        if j.kind != "train" or "main" not in j.tags or j.seed != cfg.seeds[0] or not j.done(cfg.work_dir):
            continue
        pngs = sorted((j.dir(cfg.work_dir) / "samples").glob("iter*.png"))
        if pngs:
            dst = out / "strips" / f"{j.method}-{j.family}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pngs[-1], dst)
            made.append(f"strips/{dst.name}")
    return made


# ----- report -----

def write_report(cfg: ReproduceConfig, jobs: list[Job]) -> Path:
    """Write results.json, report.md, figures and strips into ``cfg.report_dir``; returns report.md."""
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = collect(cfg, jobs)
    res["job_wall_s"] = _all_job_wall(cfg, jobs)
    return render_report(cfg, res, copy_strips(cfg, jobs, out))


def render_report(cfg: ReproduceConfig, res: dict, strips: list[str]) -> Path:
    """Decide ``res``'s verdicts and write results.json, the figures and report.md into
    ``cfg.report_dir`` (``strips``: paths of sample strips already there); returns report.md."""
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    job_wall = sum(r["wall_s"] for r in res["runs"] if math.isfinite(r["wall_s"]))
    res["verdicts"] = claims.verdicts(res, list(cfg.families), cfg.methods, cfg.gate)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    figures(res, out)
    sw = res["sweeps"]
    lines = [f"# Reproduction `{cfg.name}` on the built-in world", ""]
    made_by = "`afd reproduce`"
    if res.get("combined_from"):
        made_by = ("`afd reproduce --combine` from the reports "
                   + ", ".join(f"`{d}`" for d in res["combined_from"]) + " (their rows, decided together)")
    lines += [f"Produced by {made_by} with the config saved here as `reproduce.yaml`; "
              f"results.json holds every number. "
              f"Sum of job wall times: {res['job_wall_s'] / 60:.1f} min on this machine "
              f"(main-grid runs {job_wall / 60:.1f} min).", ""]
    if res["missing"]:
        lines += [f"**Incomplete:** {len(res['missing'])} job(s) not finished: {', '.join(res['missing'])}.", ""]
    lines += ["Setup: " + f"methods {', '.join(cfg.methods)}; families "
              + ", ".join(f"{f} = `{c}`" for f, c in cfg.families.items())
              + f"; seeds {cfg.seeds}"
              + "".join(f" ({r}: seeds {s})" for r, s in cfg.row_seeds.items())
              + f"; {cfg.steps} student updates per run; eval on "
              + ("every prompt" if cfg.eval_prompts_per_split is None else f"{cfg.eval_prompts_per_split} prompts")
              + f" of {' and '.join(cfg.eval_splits)} x {cfg.eval_per_prompt} clips (seeds from {cfg.eval_seed})."
              + (f" Extra overrides: `{' '.join(cfg.overrides)}`." if cfg.overrides else ""), "",
              "Mean ± sample std over seeds; the best model row per column in bold (world rows, and the "
              "oracle, whose weights come from the world's exact physics, are for scale and are not ranked). "
              "The base has no training randomness: its one eval stands for every seed (std 0).", ""]
    if cfg.notes:
        lines += [cfg.notes.strip(), ""]
    numerics = res.get("numerics") or {}
    if len({tuple(v) for v in numerics.values()}) > 1:
        lines += ["**The passes computed in different arithmetic:** " + "; ".join(
            f"`{d}` with {' '.join(f'`{o}`' for o in v) or 'the default'}" for d, v in numerics.items())
            + ". Rows of different passes differ by that as well as by method; a row run in both "
            "settings measures how much.", ""]
    split = _rows_from_several_reports(res["runs"])
    if split:
        lines += ["**Rows read from more than one report** (at disjoint seeds; a row's mean and ± are over all "
                  "of them): " + "; ".join(f"{m} on {f}: " + ", ".join(
                      f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))} from `{d}`"
                      for d, seeds in by.items())
                      for (f, m), by in split.items()) + ".", ""]
    if res.get("base_gaps"):
        lines += ["Each family's base row is the eval of the first report that has it. The other reports' own "
                  "evals of the same base differ by (within the evals' noise, so their rows are read against "
                  "the kept base): "
                  + "; ".join(f"{b['family']} in `{b['other']}`: " + ", ".join(
                      f"{m.split('.')[0]} {m.split('.')[1].replace('_', ' ')} {v['b'] - v['a']:+.2f}"
                      for m, v in b["gaps"].items()) for b in res["base_gaps"]) + ".", ""]
    lines += claims.gate_markdown(res, list(cfg.families), cfg.methods, cfg.gate)
    lines += ["## Table 1 analog: physics dimensions and totals, general total", "", table1(res, cfg), ""]
    lines += style_markdown({**res, "world": {"teacher": res["teacher"], "loose": res["loose"]}}, cfg,
                            claims.method_stat)
    lines += retention_markdown(res, cfg, claims.method_stat)
    lines += claims.markdown(res, list(cfg.families), cfg.methods)
    lines += ["## Table 2 analog: physical consistency and motion quality", "",
              "Motion quality stands in for VideoAlign-MQ: mean of dynamic degree, motion smoothness and "
              "100 x (1 - gravity error) on physics-eval.", "", table2(res, cfg), ""]
    lines += ["## What the discriminator rewards", "",
              "Spearman correlation, over each iteration's rollouts, of the training signal (AFD weights, "
              "D scores for GAN; DMD's signal is per noised clip and is not ranked) with exact per-clip "
              "measures: physical consistency (`reward_fidelity`), the weights the oracle would give the same "
              "rollouts (`oracle_fidelity`, AFD only) and four rendering cues (object found in every frame, "
              "exactly one object, steady area, a track without jumps). `pick_lift` (PC points, not a "
              "correlation): each prompt's top-weighted rollout's PC minus its group's mean, what a top-1 "
              "filtered update trains toward; `pick_lift_max`: the same for the best rollout, the ceiling "
              "exact weights reach (a random pick gains 0). "
              "Mean over the second half of each run's iterations, "
              "then over seeds (n = runs that logged it). Logged only; never used in training.", "",
              fidelity_table(res, cfg), ""]
    if sw["sft_steps"]:
        lines += ["## Fig. 1 analog: SFT steps", "", "![](fig1_sft_steps.png)", "",
                  "| SFT updates | PC | physics total | general total |", "|---|---|---|---|"]
        lines += [f"| {e['steps']} | {metric(e['eval'], 'physics', 'physical_consistency'):.1f} | "
                  f"{metric(e['eval'], 'physics', 'total'):.1f} | {metric(e['eval'], 'general', 'total'):.1f} |"
                  for e in sw["sft_steps"]]
        lines.append("")
    if sw["eta_d"]:
        lines += ["## Fig. 5 analog: eta_D sweep", "",
                  "Paper: eta_D in {0, 1e-6, 5e-6, 1e-5, 5e-5} at student lr 1e-5. Scaled by our student lr "
                  "(1e-4 / 1e-5 = 10), i.e. the same ratios eta_D / lr.", "", "![](fig5_eta_d.png)", "",
                  _sweep_table(sw["eta_d"], "eta_d", "eta_D"), ""]
    if sw["disc_loss"]:
        lines += ["## Fig. 6 analog: BT vs GAN-style discriminator loss", "", "![](fig6_disc_loss.png)", "",
                  _sweep_table(sw["disc_loss"], "loss", "D loss"), ""]
    if sw["budget"]:
        lines += ["## Teacher budget (beyond the paper)", "", "![](fig_budget.png)", "",
                  "Used: the distinct teacher clips the run drew on; paid: those it bought itself (the "
                  "others were in the teacher cache that all runs share). Each is at most the budget.", "",
                  "| method | prompts | clips / prompt | budget | used | paid | PC | physics total | general total |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {e['method']} | {e.get('prompts', '-')} | {e['clips_per_prompt']} | {e['teacher_clips']} | "
                  f"{e.get('used') if e.get('used') is not None else '-'} | "
                  f"{e.get('paid') if e.get('paid') is not None else '-'} | "
                  f"{metric(e['eval'], 'physics', 'physical_consistency'):.1f} | "
                  f"{metric(e['eval'], 'physics', 'total'):.1f} | "
                  f"{metric(e['eval'], 'general', 'total'):.1f} |" for e in sw["budget"]]
        lines.append("")
    lines += long_markdown(res, cfg, out)
    if strips:
        lines += ["## Samples (teacher | base | adapted, first seed)", ""]
        lines += [f"### {Path(s).stem}\n\n![]({s})\n" for s in strips]
    lines += ["## Runs", "",
              "Each method runs from its own config (`configs/train/<method>.yaml`); they share the budget "
              "and differ in the method and, where measured necessary, the student learning rate (lr). "
              "A variant row runs its method's config with the overrides listed under `variants` in "
              "reproduce.yaml; update is the student update of AFD-style rows (`afd.update`; nft is the "
              "paper's). A run copied in from another reproduction's work dir (`reuse_from`: the same "
              "resolved config and student weights) names where it ran."
              + (" A combined report (`afd reproduce --combine`) names the report each run was read from."
                 if any(r.get("report") for r in res["runs"]) else ""), "",
              "| run | method | update | family | seed | lr | teacher clips | wall (s) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['id']}" + (f" (copied from `{r['copied_from']}`)" if r.get("copied_from") else "")
              + (f" (from `{r['report']}`)" if r.get("report") else "")
              + f" | {r['method']} | {r.get('update') or '-'} | {r['family']} | {r['seed']} | "
              f"{_lr(r['lr'])} | {r['teacher_clips']} | {r['wall_s']:.0f} |" for r in res["runs"]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows_from_several_reports(runs: list[dict]) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(family, row) -> {report: its seeds} for the rows of a combined report read from more than one."""
    by: dict[tuple[str, str], dict[str, list[int]]] = {}
    for r in runs:
        if r.get("report") and r["method"] != "base":
            by.setdefault((r["family"], r["method"]), {}).setdefault(r["report"], []).append(r["seed"])
    return {k: v for k, v in by.items() if len(v) > 1}


def _lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:g}"


def _all_job_wall(cfg: ReproduceConfig, jobs: list[Job]) -> float:
    total = 0.0
    for j in jobs:
        p = j.dir(cfg.work_dir) / JOB_FILE
        if p.exists():
            total += float(_read_json(p)["wall_s"])
    return total


VERDICTS_START = "## Against the base"
VERDICTS_END = "## Table 2 analog"


def rewrite_verdicts(cfg: ReproduceConfig) -> Path:
    """Re-decide a written report with the current rules (``afd.reproduce.claims``) from its own
    results.json, without its job directories: results.json's ``verdicts`` and report.md's
    verdict sections (against the base, AFD's goals, the paper's claims) are rewritten; every
    number and every other section stays as it was. Returns report.md."""
    out = Path(cfg.report_dir)
    res_path, md_path = out / "results.json", out / "report.md"
    for p in (res_path, md_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing; --verdicts-only re-reads a written report")
    res = json.loads(res_path.read_text())
    text = md_path.read_text()
    a, b = text.find(VERDICTS_START), text.find(VERDICTS_END)
    if a < 0 or b < a:
        raise ValueError(f"{md_path}: no '{VERDICTS_START}' ... '{VERDICTS_END}' sections to rewrite")
    res["verdicts"] = claims.verdicts(res, list(cfg.families), cfg.methods, cfg.gate)
    res_path.write_text(json.dumps(res, indent=1) + "\n")
    md_path.write_text(text[:a] + "\n".join(claims.markdown(res, list(cfg.families), cfg.methods)) + "\n"
                       + text[b:])
    return md_path
