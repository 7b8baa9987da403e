"""One report from several written reports of the same protocol (``afd reproduce --combine``).

A reproduction whose rows ran as separate passes (for example its baselines after its main grid,
each with a config of its own) is read, and its verdicts decided, over all of its rows at once.
Only the reports' ``results.json`` are read, never their job directories, so a pass whose work
dir is gone can still be combined. Passes must share the protocol that makes their rows
comparable (:data:`PROTOCOL`; only the arithmetic, :data:`NUMERICS`, may differ, and the report
says so), and their evals of the same base (and of the world) must agree
within the evals' bootstrap noise: passes run on different CPUs differ by a little through bf16
numerics, and the report says by how much (the first report's base is the one kept). Otherwise
nothing is written and the first difference is named. A row may come from several reports when
their seeds do not overlap (e.g. the seed a lost pass did not reach, run by a later one). The
long-horizon evals (``long``, at the ``eval_frames`` the passes share) are merged the same way;
retention results are not merged.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

from afd.config import config_from_dict
from afd.eval.compare import eval_se
from afd.reproduce.config import ReproduceConfig
from afd.reproduce.report import metric

# Config fields every combined report must share: what each row was trained and scored under.
PROTOCOL = ("configs_dir", "steps", "seeds", "overrides", "eval_per_prompt", "eval_prompts_per_split",
            "eval_seed", "eval_splits", "eval_frames", "retention_splits")
# Overrides that set only the arithmetic a run computes in, not what it trains or measures: they
# may differ between passes (bf16 autocast is native on some CPUs and 10-30x slower emulated on
# others), and the combined report names the difference. A control row run in both settings says
# what it costs.
NUMERICS = ("train.amp",)
# Name -> value mappings that are merged key by key; a key set in two reports must agree.
# (``row_seeds`` is not one of them: a row's seeds are the union of what each report planned.)
MERGED = ("families", "variants", "row_families", "method_overrides")
# Measures whose equality says two evals of the same base (or world) are the same eval.
SAME_EVAL = (("physics", "physical_consistency"), ("physics", "total"), ("general", "total"))


class CombineError(ValueError):
    """Reports that cannot be read as one (names the report, the field, and both values)."""


def read_results(report_dir: str | Path) -> dict:
    """``report_dir``/results.json, as ``afd reproduce`` wrote it."""
    path = Path(report_dir) / "results.json"
    if not path.is_file():
        raise CombineError(f"{path}: missing; --combine reads written reports (a report_dir of `afd reproduce`)")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CombineError(f"{path}: not JSON ({e})") from None
    ok = (isinstance(res, dict) and isinstance(res.get("config"), dict) and isinstance(res.get("runs"), list)
          and isinstance(res["config"].get("methods"), list)
          and all(isinstance(r, dict) and {"family", "method", "seed", "id", "eval"} <= set(r) for r in res["runs"]))
    if not ok:
        raise CombineError(f"{path}: expected results.json of `afd reproduce` (a config with methods, and runs "
                           f"each with family, method, seed, id and eval)")
    if res.get("retention"):
        raise CombineError(f"{path}: has retention results, which --combine does not merge")
    long = res.get("long") or {}
    if not (isinstance(long, dict) and all(isinstance(e, dict) and isinstance(e.get("runs"), list)
                                           for e in long.values())):
        raise CombineError(f"{path}: its long-horizon results (`long`) are not a mapping of frames to "
                           f"{{teacher, loose, runs}}")
    return res


def eval_gaps(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """Where two evals of the same model differ: measure -> {a, b, noise}, for each SAME_EVAL
    measure whose values are not equal (noise: twice their bootstrap errors combined).

    The same base scored under the same protocol differs only through the machine's numerics
    (bf16 autocast follows the CPU's instruction set), by a fraction of the eval's own error."""
    gaps = {}
    for g, k in SAME_EVAL:
        x, y = metric(a, g, k), metric(b, g, k)
        if x == y or (math.isnan(x) and math.isnan(y)):
            continue
        noise = 2.0 * math.hypot(eval_se(a, g, k), eval_se(b, g, k))
        gaps[f"{g}.{k}"] = {"a": x, "b": y, "noise": noise}
    return gaps


def _check_same(what: str, src: str, d: str, a: dict, b: dict) -> dict:
    """``eval_gaps`` of two evals that must be of one model; a gap beyond noise is an error."""
    gaps = eval_gaps(a, b)
    beyond = {m: v for m, v in gaps.items() if not abs(v["a"] - v["b"]) <= v["noise"]}
    if beyond:
        m, v = next(iter(beyond.items()))
        noise = (f"more than the evals' noise, {v['noise']:.2f}" if math.isfinite(v["noise"])
                 else "an eval without a bootstrap error must match exactly")
        raise CombineError(f"{d}: its {what} eval gives {m} {v['b']:.4g}, {src} {v['a']:.4g} ({noise}); rows "
                           f"measured from different {what}s are not one reproduction")
    return gaps


def split_numerics(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``overrides`` -> (the protocol's, the NUMERICS ones)."""
    numerics = [o for o in overrides if o.split("=", 1)[0] in NUMERICS]
    return [o for o in overrides if o not in numerics], numerics


def _merge_config(named: list[tuple[str, dict]]) -> dict:
    """The first report's config with the others' rows, families and variants added."""
    first_name, first = named[0]
    merged = copy.deepcopy(first["config"])
    if len({tuple(split_numerics(r["config"].get("overrides") or [])[1]) for _, r in named}) > 1:
        merged["overrides"] = split_numerics(merged.get("overrides") or [])[0]  # each pass's: res["numerics"]
    for name, res in named[1:]:
        cfg = res["config"]
        for key in PROTOCOL:
            mine, theirs = cfg.get(key), first["config"].get(key)
            if key == "overrides":
                mine, theirs = split_numerics(mine or [])[0], split_numerics(theirs or [])[0]
            if mine != theirs:
                raise CombineError(f"{name}: {key} is {mine!r}, but {first_name} has {theirs!r}; combined rows "
                                   f"must share the protocol")
        for key in MERGED:
            into = merged.setdefault(key, {})
            for k, v in (cfg.get(key) or {}).items():
                if k in into and into[k] != v:
                    raise CombineError(f"{name}: {key}.{k} is {v!r}, but an earlier report has {into[k]!r}")
                into[k] = v
        merged["methods"] = list(dict.fromkeys([*merged["methods"], *cfg["methods"]]))
    merged["methods"] = ["base", *[m for m in merged["methods"] if m != "base"]] if "base" in merged["methods"] \
        else merged["methods"]
    merged["row_seeds"] = _merged_row_seeds(named, merged)
    merged["ship"], merged["reuse_from"] = {}, []
    return merged


def _merged_row_seeds(named: list[tuple[str, dict]], merged: dict) -> dict[str, list[int]]:
    """``row_seeds`` of the combined config: each trained row's seeds on each family, the union
    of what the reports planned for it, written as ROW (the same on every family) or ROW/FAMILY
    wherever that differs from ``seeds``."""
    planned: dict[str, dict[str, set[int]]] = {}
    for name, res in named:
        cfg = config_from_dict(ReproduceConfig, res["config"], source=f"{name}/results.json config")
        for row in cfg.methods:
            for fam in cfg.families:
                if row != "base" and cfg.runs_on(row, fam):
                    planned.setdefault(row, {}).setdefault(fam, set()).update(cfg.seeds_of(row, fam))
    default = list(merged["seeds"])
    out: dict[str, list[int]] = {}
    for row, by_fam in planned.items():
        seeds = {tuple(sorted(s)) for s in by_fam.values()}
        if len(seeds) == 1:
            if list(next(iter(seeds))) != default:
                out[row] = list(next(iter(seeds)))
            continue
        out.update({f"{row}/{fam}": sorted(s) for fam, s in by_fam.items() if sorted(s) != default})
    return out


def _merge_long(named: list[tuple[str, dict]], base_gaps: list[dict]) -> dict:
    """``long`` of the combined reports (afd/reproduce/long.py): at each length, the world rows
    and each family's base from the first report that has them, checked against the others'
    within the evals' noise (gaps kept in ``base_gaps``), and the trained runs of all (their
    seeds are disjoint: the 16-frame rows were checked first)."""
    out: dict = {}
    src: dict[tuple[str, str], str] = {}  # (frames, world row or family's base) -> the report kept
    checked: set[tuple[str, str, str]] = set()  # (frames, family, report) whose base was checked
    for d, r in named:
        for frames, entry in (r.get("long") or {}).items():
            into = out.setdefault(frames, {"teacher": None, "loose": None, "runs": []})
            for ref in ("teacher", "loose"):
                if entry.get(ref) is None:
                    continue
                if into[ref] is None:
                    into[ref], src[frames, ref] = entry[ref], d
                else:
                    _check_same(f"{frames}-frame world ({ref})", src[frames, ref], d, into[ref], entry[ref])
            for run in entry["runs"]:
                if run["method"] != "base":
                    into["runs"].append({**run, "report": d})
                    continue
                fam = run["family"]
                kept = src.setdefault((frames, f"base:{fam}"), d)
                if kept == d:  # the first report's base: one entry per seed, as collect_long writes it
                    into["runs"].append({**run, "report": d})
                elif (frames, fam, d) not in checked:
                    checked.add((frames, fam, d))
                    ev = next(x["eval"] for x in into["runs"] if x["method"] == "base" and x["family"] == fam)
                    gaps = _check_same(f"{frames}-frame {fam} base", kept, d, ev, run["eval"])
                    if gaps:
                        base_gaps.append({"family": f"{fam} at {frames} frames", "kept": kept, "other": d,
                                          "gaps": gaps})
    return out


def _long_ids(long: dict) -> set[str]:
    """The job ids of the finished long-horizon evals in ``long`` (their ids as jobs.py names them)."""
    ids = {run["id"] for entry in long.values() for run in entry["runs"] if "id" in run}
    return ids | {f"{ref}-f{frames}" for frames, entry in long.items() for ref in ("teacher", "loose")
                  if entry.get(ref) is not None}


def combine(report_dirs: list[str | Path], name: str, report_dir: str | Path,
            notes: str = "") -> tuple[ReproduceConfig, dict, list[str]]:
    """Read ``report_dirs`` (at least two) into one reproduction named ``name`` in ``report_dir``:
    its config (rows, families and variants of all; protocol checked equal), its results (each
    trained row from the one report that has it, the base and world rows once: the first report's,
    checked against the others' within the evals' noise, any gap kept in ``base_gaps``),
    and the sample strips copied into ``report_dir``/strips. Verdicts are left to the caller."""
    if len(report_dirs) < 2:
        raise CombineError(f"--combine: expected at least two report dirs, got {len(report_dirs)}")
    out = Path(report_dir)
    for d in report_dirs:
        if Path(d).resolve() == out.resolve():
            raise CombineError(f"--combine: report_dir {out} is one of the combined reports; write elsewhere")
    named = [(str(d), read_results(d)) for d in report_dirs]
    swept = [d for d, r in named if any((r.get("sweeps") or {}).values())]
    if len(swept) > 1:
        raise CombineError(f"--combine: {' and '.join(swept)} both have sweep points; a sweep's figure reads one "
                           f"family and base, so combine at most one report with sweeps")
    merged = _merge_config(named)
    merged.update(name=name, report_dir=str(report_dir), notes=notes)
    cfg = config_from_dict(ReproduceConfig, merged, source=f"--combine {' '.join(map(str, report_dirs))}")

    res: dict = {"name": name, "config": merged, "teacher": None, "loose": None, "runs": [],
                 "sweeps": {"sft_steps": [], "eta_d": [], "disc_loss": [], "budget": []},
                 "combined_from": [str(d) for d in report_dirs], "base_gaps": [], "job_wall_s": 0.0,
                 "numerics": {d: split_numerics(r["config"].get("overrides") or [])[1] for d, r in named}}
    owner: dict[tuple[str, str], list[str]] = {}  # (family, row) -> the reports it comes from
    base_eval: dict[str, tuple[str, dict]] = {}
    missing: list[str] = []
    strips: list[str] = []
    to_copy: list[Path] = []
    ref_src: dict[str, str] = {}
    for d, r in named:
        for ref in ("teacher", "loose"):
            if res[ref] is not None and r.get(ref) is not None:
                _check_same(f"world ({ref})", ref_src[ref], d, res[ref], r[ref])
            if res[ref] is None and r.get(ref) is not None:
                res[ref], ref_src[ref] = r[ref], d
        rows = {(run["family"], run["method"]) for run in r["runs"]}
        for fam, method in sorted(rows):
            runs = [run for run in r["runs"] if (run["family"], run["method"]) == (fam, method)]
            if method == "base":
                if fam in base_eval:
                    src, ev = base_eval[fam]
                    gaps = _check_same(f"{fam} base", src, d, ev, runs[0]["eval"])
                    if gaps:
                        res["base_gaps"].append({"family": fam, "kept": src, "other": d, "gaps": gaps})
                    continue
                base_eval[fam] = (d, runs[0]["eval"])
            elif (fam, method) in owner:
                had = {run["seed"] for run in res["runs"] if (run["family"], run["method"]) == (fam, method)}
                both = sorted(had & {run["seed"] for run in runs})
                if both:
                    raise CombineError(f"{d}: row {method} on {fam} at seed(s) {both} is also in "
                                       f"{' and '.join(owner[fam, method])}; combine reports whose trained rows "
                                       f"do not overlap (a row may come from several reports at disjoint seeds)")
            res["runs"] += [{**run, "report": d} for run in runs]
            strip = Path(d) / "strips" / f"{method}-{fam}.png"
            if strip.is_file() and (fam, method) not in owner:  # the first report's sample of the row
                to_copy.append(strip)
            owner.setdefault((fam, method), []).append(d)
        missing += r.get("missing") or []
        for key, points in (r.get("sweeps") or {}).items():
            res["sweeps"].setdefault(key, []).extend({**p, "report": d} for p in points)
        res["job_wall_s"] += float(r.get("job_wall_s") or 0.0)
    for strip in to_copy:  # only once every check has passed: a refused combine writes nothing
        dst = out / "strips" / strip.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(strip, dst)
        strips.append(f"strips/{dst.name}")
    res["long"] = _merge_long(named, res["base_gaps"])
    finished = {run["id"] for run in res["runs"]} | {ref for ref in ("teacher", "loose") if res[ref] is not None}
    finished |= _long_ids(res["long"])
    finished |= {p["id"] for points in res["sweeps"].values() for p in points if "id" in p}
    res["missing"] = [j for j in dict.fromkeys(missing) if j not in finished]
    order = {m: i for i, m in enumerate(cfg.methods)}
    fams = {f: i for i, f in enumerate(cfg.families)}
    res["runs"].sort(key=lambda run: (fams.get(run["family"], len(fams)), order.get(run["method"], len(order)),
                                      run["seed"]))
    return cfg, res, strips
