"""Ship adapted students from a reproduction: the first seed's run of a method on a family becomes
a named checkpoint in ``checkpoints/`` (weights, config with the resolved run config inside, and
a card: the command, the budget, and the eval against its base with ± errors).

``afd reproduce`` ships every ``ship`` entry of its config whose run has finished, after writing
the report, so a shipped student is always the one the report's tables describe.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from afd.config import load_config
from afd.eval.compare import HEADLINE, diff, single
from afd.io_utils import atomic_write_text
from afd.methods.registry import section_users
from afd.reproduce.config import ReproduceConfig
from afd.reproduce.jobs import EVAL_FILE, JOB_FILE, Job
from afd.reproduce.report import run_config, teacher_clips
from afd.student.shipped import shipping_root


def parse_target(spec: str) -> tuple[str, str]:
    """``"afd/state-chunk"`` -> ("afd", "state-chunk")."""
    method, sep, family = spec.partition("/")
    if not sep or not method or not family:
        raise ValueError(f"ship target {spec!r}: expected METHOD/FAMILY, e.g. afd/state-chunk")
    return method, family


def _job(jobs: list[Job], kind: str, **match) -> Job | None:
    for j in jobs:
        if j.kind == kind and "main" in j.tags and all(getattr(j, k) == v for k, v in match.items()):
            return j
    return None


def _cell(ev: dict, group: str, key: str, digits: int) -> str:
    s = single(ev, group, key)
    if s is None:
        return "-"
    return f"{s.mean:.{digits}f}" + (f" ± {s.se:.{digits}f}" if s.se == s.se else "")


def card(name: str, cfg: ReproduceConfig, job: Job, base_job: Job, config_path: str | None,
         jobs_left: int = 0) -> str:
    """The model card (markdown) of a shipped student; ``jobs_left``: unfinished jobs of the
    reproduction when it was shipped (the card then says its report is not complete)."""
    work = Path(cfg.work_dir)
    run = json.loads((job.dir(work) / JOB_FILE).read_text())
    after = json.loads((job.dir(work) / EVAL_FILE).read_text())
    before = json.loads((base_job.dir(work) / EVAL_FILE).read_text())

    rc = run_config(job, work)
    t = rc.train
    base = cfg.families[job.family]
    method = cfg.base_method(job.method).upper()
    # A variant row says what sets it apart from its method's config.
    own = cfg.variants.get(job.method, [None])[1:]
    label = method if job.method not in cfg.variants else (
        f"{method} (row `{job.method}`" + (f": {', '.join(own)})" if own else ")"))
    lines = [f"# {name} — `{base}` adapted with {label}", "",
             f"The `{base}` student (same architecture and sampler; its card: `checkpoints/{base}/README.md`) after "
             f"{t.steps} {method} iterations against the world teacher. "
             f"Seed {job.seed} of the main grid of "
             f"`{cfg.report_dir}/report.md`, which compares it with the other methods and seeds"
             + (f" (not complete when this was shipped: {jobs_left} jobs left; rerunning the command "
                "below resumes it)" if jobs_left else "") + ".", "",
             "## How it was made", "", "```bash",
             f"afd reproduce --config {config_path or 'configs/reproduce/reproduce.yaml'}   "
             "# runs every job, then ships this folder",
             # The planned command: a run copied in from another reproduction (reuse_from) recorded
             # its own directory there.
             f"# this job ({job.id}):", "afd " + " ".join(job.argv), "```", "",
             f"- Budget: {teacher_clips(job, work)} teacher clips ({t.split} x {rc.teacher.clips_per_prompt} per "
             f"prompt, cached and shared by every method); {t.steps} iterations of {t.prompts} prompts x "
             f"{t.rollouts} rollouts, {t.student_steps} student update(s) each at lr {t.lr:g}"
             + (f"; discriminator `{rc.disc.model.backbone}`, "
                f"{rc.disc.steps} steps per iteration at lr {rc.disc.lr:g}, "
                f"{rc.disc.loss} loss" if cfg.base_method(job.method) in ("afd", "gan") else "")
             + (f"; student update `{rc.afd.update}`" if cfg.base_method(job.method) in section_users("afd") else "")
             + ".",
             f"- Wall time on the 2-core CPU: {run['wall_s'] / 60:.1f} min"
             + (" (resumed; last part only)" if run.get("resumed") else "")
             + ". The resolved config is inside `config.json` (`extra.adapted_with`).", "",
             "## Evaluation against its base", "",
             f"Every prompt of physics-eval and general-eval x {cfg.eval_per_prompt} clips (seeds from "
             f"{cfg.eval_seed}), the same clips' seeds for both; ± on a score is its bootstrap standard error, ± on "
             "the change is 2 combined errors, and a change inside them is marked within noise. The spread "
             "over training seeds is in the report.", "",
             f"| | {base} | {name} | change |", "|---|---|---|---|"]
    for g, k, label, digits in HEADLINE:
        a, b = single(after, g, k), single(before, g, k)
        change = diff(a, b).text(digits) if a and b else "-"
        lines.append(f"| {label} | {_cell(before, g, k, digits)} | {_cell(after, g, k, digits)} | {change} |")
    lines += ["", "## Use", "", "```bash", f"afd sample --checkpoint {name} --split physics-eval --out samples/{name}",
              f"afd eval --checkpoint {name} --per-prompt {cfg.eval_per_prompt} --seed {cfg.eval_seed}", "```", ""]
    return "\n".join(lines)


RECIPE = "recipe"  # checkpoints/<name>/recipe/stageN.yaml: the configs that made the checkpoint


def recipe_section(old_card: Path) -> str:
    """The ``## Recipe`` section of a card being replaced (up to its next ``## `` heading), or ""."""
    text = old_card.read_text() if old_card.is_file() else ""
    start = text.find("\n## Recipe")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return "\n" + text[start + 1:end if end >= 0 else len(text)].rstrip() + "\n"


SHIPPED_BY = re.compile(r"afd reproduce --config (\S+\.yaml)")


def claimed_elsewhere(name: str, dest: Path, config_path: str | None) -> str | None:
    """The other reproduce config that shipped ``dest`` and still lists ``name`` under ``ship``,
    or None. Two configs shipping one name would swap the checkpoint at each one's report."""
    card = dest / "README.md"
    m = SHIPPED_BY.search(card.read_text()) if card.is_file() else None
    other = m.group(1) if m else None
    mine = Path(config_path or "configs/reproduce/reproduce.yaml")
    if other is None or not Path(other).is_file() or Path(other).resolve() == mine.resolve():
        return None
    try:
        ships = load_config(ReproduceConfig, other).ship
    except (ValueError, TypeError, KeyError, OSError):
        return None
    return other if name in ships else None


def ship(cfg: ReproduceConfig, jobs: list[Job], dest_root: str | Path | None = None,
         config_path: str | None = None, log=print) -> list[Path]:
    """Copy each finished ``cfg.ship`` target (first seed) to ``dest_root/<name>`` with its card;
    ``dest_root`` defaults to ``$AFD_HOME/checkpoints``, where shipped names are looked up first
    (afd.student.shipped). Targets whose run is not finished are skipped (and said so). Returns
    the written folders."""
    dest_root = shipping_root() if dest_root is None else dest_root
    Path(dest_root).mkdir(parents=True, exist_ok=True)
    out = []
    seed = cfg.seeds[0]
    for name, spec in cfg.ship.items():
        method, family = parse_target(spec)
        job = _job(jobs, "train", method=method, family=family, seed=seed)
        base_job = _job(jobs, "base", family=family)
        if job is None or base_job is None:
            raise ValueError(f"ship.{name}: {spec} is not a main-grid run of this reproduction")
        if not (job.done(cfg.work_dir) and base_job.done(cfg.work_dir)):
            log(f"reproduce: not shipping {name}: {job.id} or {base_job.id} has not finished")
            continue
        src = job.dir(cfg.work_dir) / "student"
        dest = Path(dest_root) / name
        other = claimed_elsewhere(name, dest, config_path)
        if other is not None:
            log(f"reproduce: not shipping {name}: {dest} was shipped by {other}, which still ships it; "
                "remove it from one of the two configs' ship")
            continue
        tmp = Path(dest_root) / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        left = sum(not j.done(cfg.work_dir) for j in jobs)
        text = card(name, cfg, job, base_job, config_path, left)
        if (dest / RECIPE).is_dir():  # the hand-kept provenance chain beside the card stays, and its section
            shutil.copytree(dest / RECIPE, tmp / RECIPE)
            text += recipe_section(dest / "README.md")
        atomic_write_text(tmp / "README.md", text)
        # Swap in whole: a reader never sees a folder with new weights and an old card.
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        log(f"reproduce: shipped {job.id} as {dest}")
        out.append(dest)
    return out
