"""The reproduction as a list of jobs, each one ``afd`` process with its own directory.

A job is finished when ``<work_dir>/<id>/eval.json`` exists and the job still is what the
config asks for: a training run whose saved resolved config differs from the one planned now (a
method's YAML was edited, say), an eval whose recorded command differs, or a job whose student
checkpoint's weights changed since it ran (a re-exported base) is stale. The runner
moves a stale job's directory to ``<work_dir>/.stale/`` (nothing is deleted) and runs it again.
A training job killed halfway is resumed (``--resume``) from its checkpoint. Jobs that come out
identical (a sweep point equal to the main run's config) share one id, so they run once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from afd.config import config_to_dict, load_config
from afd.io_utils import file_sha256
from afd.reproduce.config import DEFAULT_EVAL_SPLITS, ReproduceConfig
from afd.student.shipped import resolve_checkpoint
from afd.train.config import AdaptConfig

EVAL_FILE = "eval.json"
JOB_FILE = "job.json"


class JobFailed(RuntimeError):
    """An ``afd`` subprocess of the reproduction exited non-zero."""


@dataclass(frozen=True)
class Job:
    id: str  # directory name under work_dir
    # "world" | "base" | "train" | "long" (a longer eval of another job's student or world) |
    # "retain" (another job's student on the original domain's splits)
    kind: str
    argv: tuple[str, ...]  # the ``afd`` command line (without "afd")
    method: str | None = None
    family: str | None = None
    seed: int | None = None
    overrides: tuple[str, ...] = ()  # train: the keys this job sets beyond the common ones
    tags: tuple[str, ...] = field(default=(), compare=False)  # "main", "sweep:eta_d", ...
    config: str | None = field(default=None, compare=False)  # train: the resolved AdaptConfig, canonical JSON
    student: str | None = field(default=None, compare=False)  # digest of the student checkpoint's weights
    # long, retain: the student folder of the trained run it scores (None: a base or the world).
    # Its weights do not exist when the job is planned, so its identity is their age: the job is
    # stale once they are newer than its eval (the run was trained again).
    reads: str | None = field(default=None, compare=False)

    def dir(self, work_dir: str | Path) -> Path:
        return Path(work_dir) / self.id

    def done(self, work_dir: str | Path) -> bool:
        """Finished, and finished as planned (see :meth:`stale`)."""
        return (self.dir(work_dir) / EVAL_FILE).exists() and self.stale(work_dir) is None

    def stale(self, work_dir: str | Path) -> str | None:
        """Why a finished (or, for training, started) job no longer matches its plan, or None (also
        when it cannot be told)."""
        return self._stale_at(self.dir(work_dir))

    def _stale_at(self, d: Path) -> str | None:
        # A training run killed halfway is checked too: resuming it under a changed config would
        # mix two configs in one run.
        if not (d / EVAL_FILE).exists() and not (self.kind == "train" and (d / "config.yaml").exists()):
            return None
        try:
            rec = json.loads((d / JOB_FILE).read_text()) if (d / JOB_FILE).exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"its record {d / JOB_FILE} is not valid JSON"
        if not isinstance(rec, dict) or (rec and not isinstance(rec.get("argv"), list)):
            return f"its record {d / JOB_FILE} is not an object with an argv list"
        if self.student is not None and rec.get("student") not in (None, self.student):
            return "the weights of its student checkpoint changed"
        weights = Path(self.reads) / "model.safetensors" if self.reads else None
        if weights is not None and weights.exists() and (d / EVAL_FILE).exists() \
                and weights.stat().st_mtime > (d / EVAL_FILE).stat().st_mtime:
            return "its student was trained again after it ran"
        if self.kind == "train" and self.config is not None:
            saved = d / "config.yaml"
            if not saved.exists():
                return None
            try:
                ran = _canonical_json(_what_it_computes(config_to_dict(load_config(AdaptConfig, saved))))
            except (ValueError, TypeError, KeyError) as e:
                return f"its saved config {saved} no longer loads ({e})"
            if ran != self.config:
                return f"its resolved config changed: {_config_diff(json.loads(ran), json.loads(self.config))}"
            return None
        if rec:
            argv = [a for a in rec["argv"] if a != "--resume"]
            if _without_output(argv) != _without_output(list(self.argv)):
                return "its command changed"
        return None


_DIGESTS: dict[str, str] = {}


def weights_digest(spec: str) -> str:
    """Short sha256 of a student checkpoint's ``model.safetensors`` (a path or shipped name): the
    identity ``afd train`` records as ``base_sha256``."""
    path = (resolve_checkpoint(spec) / "model.safetensors").resolve()
    if str(path) not in _DIGESTS:
        _DIGESTS[str(path)] = file_sha256(path)[:16]
    return _DIGESTS[str(path)]


def _canonical_json(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


def _what_it_computes(cfg: dict) -> dict:
    """A resolved config without where the run is written: moving or renaming the work
    directory (or spelling it absolute) does not make a finished run stale."""
    return {**cfg, "run": {k: v for k, v in cfg["run"].items() if k != "dir"}}


def _without_output(argv: list[str]) -> list[str]:
    """An eval command without its ``--json`` output path (see :func:`_what_it_computes`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        else:
            out.append(a)
    return out


def _config_diff(old: dict, new: dict) -> str:
    """``key: old -> new`` for the leaves that differ (at most 4 named)."""
    out = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            out.append(f"{path}: {a} -> {b}")

    walk(old, new, "")
    return "; ".join(out[:4]) + (f" (+{len(out) - 4} more)" if len(out) > 4 else "")


def _slug(overrides: tuple[str, ...]) -> str:
    return "-".join(o.replace("=", "").replace(".", "_").replace("/", "_") for o in overrides)


def _own_splits(cfg: ReproduceConfig) -> list[str]:
    """The config's eval splits when they are not the default ones (else []: commands, and so job
    ids and finished runs, stay as they were before ``eval_splits`` existed)."""
    return [] if list(cfg.eval_splits) == list(DEFAULT_EVAL_SPLITS) else list(cfg.eval_splits)


def _eval_args(cfg: ReproduceConfig) -> list[str]:
    args = ["--per-prompt", str(cfg.eval_per_prompt), "--seed", str(cfg.eval_seed)]
    args += [a for split in _own_splits(cfg) for a in ("--split", split)]
    if cfg.eval_prompts_per_split is not None:
        args += ["--prompts-per-split", str(cfg.eval_prompts_per_split)]
    return args


class JobPlanner:
    """Expands a :class:`ReproduceConfig` into jobs (deduplicated, in run order)."""

    def __init__(self, cfg: ReproduceConfig):
        self.cfg = cfg
        self.jobs: dict[str, Job] = {}
        self._defaults: dict[str, dict] = {}

    def method_config(self, method: str) -> Path:
        """The YAML a row trains from (a variant's: its method's)."""
        method = self.cfg.base_method(method)
        path = Path(self.cfg.configs_dir) / f"{method}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no config for method {method!r} (configs_dir={self.cfg.configs_dir})")
        return path

    def _common(self, method: str, family: str, seed: int) -> list[str]:
        c = self.cfg
        return [f"student.checkpoint={c.families[family]}", f"train.seed={seed}", f"train.steps={c.steps}",
                "eval.before=false", "eval.every=0", f"eval.final_per_prompt={c.eval_per_prompt}",
                "eval.final_prompts_per_split="
                f"{'null' if c.eval_prompts_per_split is None else c.eval_prompts_per_split}",
                f"eval.seed={c.eval_seed}",
                *([f"eval.splits=[{','.join(_own_splits(c))}]"] if _own_splits(c) else []),
                *c.overrides, *c.row_overrides(method)]

    def _resolved(self, method: str, overrides: list[str]) -> dict:
        return config_to_dict(load_config(AdaptConfig, self.method_config(method), overrides))

    def _canonical(self, method: str, family: str, seed: int, extra: list[str]) -> tuple[str, ...]:
        """The overrides of ``extra`` that change the resolved config (others are the defaults)."""
        common = self._common(method, family, seed)
        key = f"{method}/{family}/{seed}"
        if key not in self._defaults:
            self._defaults[key] = self._resolved(method, common)
        kept = []
        for o in extra:
            if self._resolved(method, common + [o]) != self._defaults[key]:
                kept.append(o)
        return tuple(kept)

    def _add(self, job: Job, tag: str) -> Job:
        old = self.jobs.get(job.id)
        if old is None:
            self.jobs[job.id] = job = Job(**{**job.__dict__, "tags": (tag,)})
            return job
        merged = Job(**{**old.__dict__, "tags": old.tags + (tag,)})
        self.jobs[job.id] = merged
        return merged

    def world(self, mode: str) -> Job:
        jid = "teacher" if mode == "real" else "loose"
        argv = ("eval", "--world", mode, *_eval_args(self.cfg), "--json",
                str(Path(self.cfg.work_dir) / jid / EVAL_FILE))
        return self._add(Job(jid, "world", argv, method=jid), "reference")

    def base(self, family: str) -> Job:
        jid = f"base-{family}"
        argv = ("eval", "--checkpoint", self.cfg.families[family], *_eval_args(self.cfg),
                "--json", str(Path(self.cfg.work_dir) / jid / EVAL_FILE))
        return self._add(Job(jid, "base", argv, method="base", family=family, seed=None,
                             student=weights_digest(self.cfg.families[family])), "main")

    def train(self, method: str, family: str, seed: int, extra: list[str] = (), tag: str = "main") -> Job:
        extra_c = self._canonical(method, family, seed, list(extra))
        jid = f"{method}-{family}-s{seed}" + (f"-{_slug(extra_c)}" if extra_c else "")
        run_dir = Path(self.cfg.work_dir) / jid
        argv = ("train", "--config", str(self.method_config(method)), "--no-progress", f"run.dir={run_dir}",
                *self._common(method, family, seed), *extra_c)
        resolved = _canonical_json(_what_it_computes(self._resolved(method, list(argv[4:]))))
        return self._add(Job(jid, "train", argv, method=method, family=family, seed=seed, overrides=extra_c,
                             config=resolved, student=weights_digest(self.cfg.families[family])), tag)

    def long_eval(self, of: Job, frames: int) -> Job:
        """``of`` (a world row, a base or a trained run) sampled at ``frames`` frames and scored
        per window (``afd eval --frames``); job id ``<of>-f<frames>``, run right after ``of``."""
        jid = f"{of.id}-f{frames}"
        if of.kind == "world":
            source: tuple[str, ...] = ("--world", of.argv[2])
        elif of.kind == "base":
            source = ("--checkpoint", self.cfg.families[of.family])
        else:
            source = ("--checkpoint", str(of.dir(self.cfg.work_dir) / "student"))
        argv = ("eval", *source, "--frames", str(frames), *_eval_args(self.cfg), "--no-progress", "--json",
                str(Path(self.cfg.work_dir) / jid / EVAL_FILE))
        reads = source[1] if of.kind == "train" else None
        return self._add(Job(jid, "long", argv, method=of.method, family=of.family, seed=of.seed,
                             overrides=(f"frames={frames}",), reads=reads), f"long:{of.id}")

    def retention_eval(self, of: Job) -> Job:
        """``of`` (a base or a trained run) scored on ``retention_splits``; job id ``<of>-retain``.
        Its identity is the base's weights, or the trained run's weights' age (``Job.reads``), so
        a rerun of a stale run makes its retention eval stale too, and a config field added with
        its default does not."""
        jid = f"{of.id}-retain"
        c = self.cfg
        source = self.cfg.families[of.family] if of.kind == "base" else str(of.dir(c.work_dir) / "student")
        argv = ("eval", "--checkpoint", source, "--per-prompt", str(c.eval_per_prompt), "--seed", str(c.eval_seed),
                *[a for split in c.retention_splits for a in ("--split", split)],
                *(["--prompts-per-split", str(c.eval_prompts_per_split)] if c.eval_prompts_per_split is not None
                  else []),
                "--no-progress", "--json", str(Path(c.work_dir) / jid / EVAL_FILE))
        base = of.kind == "base"
        return self._add(Job(jid, "retain", argv, method=of.method, family=of.family, seed=of.seed,
                             student=of.student if base else None, reads=None if base else source),
                         f"retain:{of.id}")

    def plan(self) -> list[Job]:
        c, s = self.cfg, self.cfg.sweeps
        self.world("real")
        self.world("loose")
        trained = [m for m in c.methods if m != "base"]
        for fam in c.families:
            self.base(fam)
        # Sweeps last: the main tables' seed spread comes before the single-seed ablations.
        seeds = sorted({s for m in trained for fam in c.families for s in c.seeds_of(m, fam)})
        grid = ([(fam, seed) for seed in seeds for fam in c.families] if c.order == "seeds"
                else [(fam, seed) for fam in c.families for seed in seeds])
        for fam, seed in grid:
            for m in trained:
                if seed in c.seeds_of(m, fam) and c.runs_on(m, fam):
                    self.train(m, fam, seed)
        self._sweeps(s)
        planned = list(self.jobs.values())
        # Each source's longer evals right after it: a partial reproduction has them for every
        # finished run.
        ordered = []
        for job in planned:
            ordered.append(job)
            if job.kind in ("world", "base") or (job.kind == "train" and "main" in job.tags):
                ordered += [self.long_eval(job, frames) for frames in c.eval_frames]
            if c.retention_splits and (job.kind == "base" or (job.kind == "train" and "main" in job.tags)):
                ordered.append(self.retention_eval(job))
        return ordered

    def _sweeps(self, s) -> None:
        # The main runs' step count is a point of the SFT curve too (same job, run once).
        for k in sorted(set(s.sft_steps) | ({self.cfg.steps} if s.sft_steps else set())):
            self.train("sft", s.family, s.seed, [f"train.steps={k}"], tag="sweep:sft_steps")
        for v in s.eta_d:
            self.train("afd", s.family, s.seed, [f"disc.lr={v}"], tag="sweep:eta_d")
        for loss in s.disc_loss:
            self.train("afd", s.family, s.seed, [f"disc.loss={loss}"], tag="sweep:disc_loss")
        for m in s.budget_methods:
            for k in s.budget_clips:
                self.train(m, s.family, s.seed, [f"teacher.clips_per_prompt={k}"], tag="sweep:budget")
            for k in s.budget_prompts:
                self.train(m, s.family, s.seed, [f"train.pool_size={k}"], tag="sweep:budget")


def plan_jobs(cfg: ReproduceConfig) -> list[Job]:
    """Every job of the reproduction, deduplicated, in the order they run."""
    return JobPlanner(cfg).plan()


def _computes_as_planned(job: Job, d: Path) -> bool:
    """Whether the finished job directory ``d`` (of any work dir) provably computed what ``job``
    asks for: a training run's saved resolved config, or an eval's recorded command, equal to the
    plan's, from the same student weights where the plan names them. Unlike :meth:`Job.stale`,
    which gives an old directory the benefit of the doubt, nothing unrecorded passes."""
    if not (d / EVAL_FILE).exists() or not (d / JOB_FILE).exists():
        return False
    if job.kind == "train" and not (d / "config.yaml").exists():
        return False
    try:
        rec = json.loads((d / JOB_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(rec, dict) or not isinstance(rec.get("argv"), list):
        return False
    if job.student is not None and rec.get("student") != job.student:
        return False
    return job._stale_at(d) is None


def reuse_candidate(job: Job, work_dir: str | Path, reuse_from) -> Path | None:
    """What ``run_jobs`` copies in for ``job``: a :func:`find_reusable` match, when the job has
    neither finished nor started here (a started training run resumes instead)."""
    d = job.dir(work_dir)
    if not reuse_from or (d / EVAL_FILE).exists() or (d / "checkpoint").is_dir():
        return None
    return find_reusable(job, reuse_from)


def find_reusable(job: Job, reuse_from: list[str] | tuple[str, ...]) -> Path | None:
    """A finished directory in one of the work dirs ``reuse_from`` that computed exactly what
    ``job`` asks for (see :func:`_computes_as_planned`), or None. A training run matches on its
    resolved config, whatever its id there; an eval matches on its command, so the world rows and
    the bases can, while longer and retention evals of a trained run, whose commands name that
    run's directory here, never do (they are rerun, which is cheap)."""
    for root in map(Path, reuse_from):
        if not root.is_dir():
            continue
        same_id = root / job.id
        candidates = [same_id] + sorted(d for d in root.iterdir() if d.is_dir() and d != same_id
                                        and job.kind == "train" and not d.name.startswith("."))
        for d in candidates:
            if d.is_dir() and _computes_as_planned(job, d):
                return d
    return None


def _adopt(job: Job, src: Path, work_dir: str | Path) -> bool:
    """Copy a finished job directory from another work dir in as this job's, recording where from.
    The copy goes to a hidden directory (never a reuse candidate itself) and is checked again
    before it takes the job's place, so a source moved or rewritten during the copy is not
    adopted. Returns whether it was; raises JobFailed when the copy itself fails."""
    d = job.dir(work_dir)
    tmp = d.with_name(f".{d.name}.adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, symlinks=True)
        if not _computes_as_planned(job, tmp):
            shutil.rmtree(tmp)
            return False
        rec = json.loads((tmp / JOB_FILE).read_text())
        (tmp / JOB_FILE).write_text(json.dumps({**rec, "copied_from": str(src)}) + "\n")
        if d.exists():  # an empty or unstarted directory: nothing of this job's own is lost
            shutil.rmtree(d)
        tmp.rename(d)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise JobFailed(f"job {job.id}: copying the finished run {src} in failed ({e}); rerun `afd reproduce`, "
                        "or drop that work dir from reuse_from") from None
    return True


def _set_aside(d: Path, stale_root: Path) -> Path:
    stale_root.mkdir(parents=True, exist_ok=True)
    dest, n = stale_root / d.name, 1
    while dest.exists():
        n += 1
        dest = stale_root / f"{d.name}.{n}"
    shutil.move(str(d), str(dest))
    return dest


def run_jobs(jobs: list[Job], work_dir: str | Path, log=print, reuse_from: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the unfinished jobs one after another as ``afd`` subprocesses.

    Each job logs to ``<dir>/job.log`` and records its command and wall time in ``<dir>/job.json``.
    A stale job (see :meth:`Job.stale`) is moved to ``<work_dir>/.stale/`` and run again. A job
    not yet started here that another work dir of ``reuse_from`` finished exactly as planned
    (:func:`find_reusable`) is copied in instead of run.
    Raises :class:`JobFailed` naming the job and its log at the first failure (finished jobs stay
    finished; rerun to continue). Returns counts {"ran", "skipped", "reused"}."""
    ran = skipped = reused = 0
    for i, job in enumerate(jobs, 1):
        d = job.dir(work_dir)
        why = job.stale(work_dir)
        if why is not None:
            dest = _set_aside(d, Path(work_dir) / ".stale")
            log(f"reproduce: {job.id} is stale ({why}); moved to {dest}, running it again")
        elif (d / EVAL_FILE).exists():  # finished and not stale: done
            skipped += 1
            continue
        src = reuse_candidate(job, work_dir, reuse_from)
        if src is not None and _adopt(job, src, work_dir):
            log(f"reproduce: {job.id} reused from {src} "
                f"({'same resolved config' if job.kind == 'train' else 'same command'})")
            reused += 1
            continue
        d.mkdir(parents=True, exist_ok=True)
        argv = list(job.argv)
        resumed = job.kind == "train" and (d / "checkpoint").is_dir()
        if resumed:
            argv.insert(1, "--resume")
        log(f"reproduce: [{i}/{len(jobs)}] {job.id}: afd {' '.join(argv)}")
        t0 = time.time()
        with open(d / "job.log", "a") as f:
            rc = subprocess.run([sys.executable, "-m", "afd", *argv], stdout=f, stderr=subprocess.STDOUT).returncode
        wall = time.time() - t0
        if rc != 0 or not job.done(work_dir):
            raise JobFailed(f"job {job.id} failed (exit {rc}) after {wall:.0f}s; see {d / 'job.log'}. "
                            "Finished jobs are kept: rerun `afd reproduce` to continue.")
        # A resumed job's wall time counts only its last part (the killed part is not known).
        rec = {"argv": argv, "wall_s": wall, "resumed": resumed}
        if job.student is not None:
            rec["student"] = job.student
        (d / JOB_FILE).write_text(json.dumps(rec) + "\n")
        log(f"reproduce: {job.id} done in {wall:.0f}s")
        ran += 1
    return {"ran": ran, "skipped": skipped, "reused": reused}
