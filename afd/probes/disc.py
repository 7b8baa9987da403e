"""``afd probe-disc``: does a discriminator, trained the way ``afd train`` trains it, rank rollouts
it has never seen by their physics? An offline benchmark that takes minutes instead of a run, so
discriminator designs are compared on the same data, with ± over seeds and their cost.

Data (made once, then cached under ``cache/probe/``, keyed by the base weights' sha256, the split,
the prompt count and the rollouts per prompt): every prompt's teacher clip (through the same
budgeted teacher cache as ``afd train``: at most one paid clip per prompt), R rollouts of the base
per prompt (noise seeds 0 .. R-1) and each rollout's exact measures (physical consistency and the
rendering cues of ``afd.train.fidelity``).

Each probe seed splits the prompts in two (``held_prompts`` of them held out) and the rollouts in
two: D trains on the training prompts' teacher clips and their rollouts ``0 .. R/2 - 1``, and is
judged on the held-out prompts' rollouts ``R/2 .. R - 1``: other prompts and other noise seeds.
Training runs the loop's discriminator phase (``train_discriminator``: the same loss, steps,
augmentation, instance noise, R1, label smoothing, replay, re-rendering and the scoring EMA),
each iteration on ``train.prompts`` x ``train.rollouts``. The student never changes, so this measures D on the base's
distribution: what AFD's first updates see.

Every ``every`` iterations D is judged in eval mode (``judge_set``): ``oracle`` is the Spearman of
its AFD weights with the weights the oracle gives the same rollouts (the same advantage settings
applied to physical consistency, as ``afd.methods.oracle.oracle_weights`` does), ``pc`` with
physical consistency itself (the loop's ``reward_fidelity``), ``within`` the mean over prompts of
the Spearman of D's scores with physical consistency among that prompt's rollouts, ``cue_<name>``
the weights' Spearman with each rendering cue, ``lift`` the PC gained by each prompt's
top-scored rollout over its group's mean and ``lift_max`` the same for its best rollout (the
ceiling; what a top-1 filtered update trains toward, ``afd.train.fidelity.pick_lift``), ``acc``
the pairwise accuracy (teacher above rollout), ``r_phi`` and its spread (``r_phi_p10``,
``r_phi_p90``, ``sat``: the share of pairs with sigmoid(d_S - d_T) < 0.01, a saturated D);
``train_oracle`` is ``oracle`` on the training prompts' own rollouts (overfitting). The world's
evaluator makes these measures only; D never sees them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from afd.config import config_to_dict, save_config
from afd.disc.model import Discriminator
from afd.eval.measures import CUES, rollout_measures
from afd.io_utils import atomic_write_text, file_sha256, load_safetensors, save_safetensors_atomic
from afd.methods.advantages import compute_weights
from afd.rollout_groups import group_ids
from afd.student.base import StudentModel, load_student_model
from afd.student.codec import make_codec
from afd.student.sample import generate
from afd.student.shipped import resolve_checkpoint
from afd.teacher import to_student_format
from afd.text.encoder import get_text_encoder
from afd.train.config import AdaptConfig
from afd.train.disc_phase import ReplayBuffer, rerender_pair, score_pairs, train_discriminator
from afd.train.ema import ema_update, make_ema
from afd.train.fidelity import pick_lift, spearman
from afd.train.teacher_clips import TeacherClips
from afd.video.core import stack
from afd.world.splits import load_split
from afd.world.teacher import WorldTeacher

MEASURES = ("physical_consistency", *CUES)
NEGATIVES = ("base", "loose")
# What a probe's summary aggregates over seeds, in the table's order.
SUMMARY_KEYS = ("oracle", "pc", "within", "lift", "lift_max", "acc", "r_phi", "sat", "train_oracle", "s_per_iter")


@dataclass
class ProbeData:
    """prompts (N,); teacher (N, T, 3, H, W); rollouts (N, R, T, 3, H, W), both in [-1, 1];
    measures: name -> (N, R) float64 (``MEASURES``)."""

    prompts: list[str]
    teacher: torch.Tensor
    rollouts: torch.Tensor
    measures: dict[str, np.ndarray]


def _probe_prompts(split: str, n: int | None) -> list[str]:
    """The split, or a fixed subset of n of its prompts (the same for every probe seed)."""
    pool = load_split(split)
    if n is None or n >= len(pool):
        return pool
    if n < 2:
        raise ValueError(f"--prompts must be >= 2, got {n}")
    idx = np.sort(np.random.default_rng(0).choice(len(pool), n, replace=False))
    return [pool[i] for i in idx]


def probe_data(cfg: AdaptConfig, student: StudentModel, base_sha: str, n_prompts: int | None,
               rollouts: int, cache_root: Path, negatives: str = "base") -> ProbeData:
    """Teacher clips, rollouts of ``student`` (the base, whose weights hash to ``base_sha``) and
    their measures, from ``cache_root`` when already made.

    ``negatives="loose"`` replaces each prompt's training rollouts by clips of the loose world (the
    base's pretraining data: the same renderer as the teacher, physics drawn per clip), a
    diagnostic only a simulator allows: D then cannot key on the student's rendering, so the probe
    measures whether it can learn the physics at all from the teacher clips."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    _check_rollouts(rollouts)
    prompts = _probe_prompts(cfg.train.split, n_prompts)
    key = f"{base_sha[:16]}-{cfg.train.split}-n{len(prompts)}-r{rollouts}-s0"
    if negatives != "base":
        key += f"-{negatives}"
    path = cache_root / f"{key}.safetensors"
    sc = student.config
    fmt = sc.video_format()
    teacher = TeacherClips(cfg.teacher, load_split(cfg.train.split), fmt).get(prompts, [0] * len(prompts))
    if path.exists():
        t = load_safetensors(path)
        return ProbeData(prompts, teacher, t["rollouts"].float(),
                         {m: t[m].numpy().astype(np.float64) for m in MEASURES})
    t0 = time.time()
    flat_p = [p for p in prompts for _ in range(rollouts)]
    flat_s = [j for _ in prompts for j in range(rollouts)]
    # rows (prompt i, rollout j) in order; with loose negatives the training rows j < R/2 are world clips
    loose_row = [negatives == "loose" and j < rollouts // 2 for _ in prompts for j in range(rollouts)]
    clips = torch.empty(len(flat_p), sc.frames, 3, sc.pixel_size, sc.pixel_size)
    for is_loose in (False, True):
        rows = [i for i, v in enumerate(loose_row) if v == is_loose]
        if not rows:
            continue
        p, sd = [flat_p[i] for i in rows], [flat_s[i] for i in rows]
        clips[rows] = (stack(to_student_format(WorldTeacher(mode="loose").sample(p, sd), fmt)) if is_loose
                       else generate(student, p, sd, amp=cfg.train.amp)).float()
    meas = rollout_measures(clips, flat_p)
    n = len(prompts)
    tensors = {"rollouts": clips.reshape(n, rollouts, *clips.shape[1:]).to(torch.float16)}
    tensors.update({m: torch.from_numpy(np.asarray(meas[m], np.float64).reshape(n, rollouts)) for m in MEASURES})
    cache_root.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(tensors, path)
    print(f"probe-disc: {len(flat_p)} base rollouts and their measures in {time.time() - t0:.0f}s -> {path}")
    # read back what was stored, so a first run and a cached run see identical (float16) clips
    return ProbeData(prompts, teacher, tensors["rollouts"].float(),
                     {m: tensors[m].numpy() for m in MEASURES})


def _check_rollouts(rollouts: int) -> None:
    if rollouts < 4 or rollouts % 2:
        raise ValueError(f"--rollouts must be an even number >= 4 (half train, half held out; a rank "
                         f"needs two rollouts per prompt), got {rollouts}")


def split_prompts(n: int, held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training prompt indices, held-out prompt indices), both sorted, disjoint, covering 0..n-1."""
    if not 1 <= held <= n - 1:
        raise ValueError(f"--held-prompts must be in [1, {n - 1}] for {n} prompts, got {held}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[held:]), np.sort(perm[:held])


def _within(scores: np.ndarray, pc: np.ndarray) -> float:
    vals = [spearman(s, p) for s, p in zip(scores, pc)]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def judge_set(disc, cfg: AdaptConfig, data: ProbeData, prompts: np.ndarray, cols: slice, text, ref, codec,
              gen_seed: int) -> dict[str, float]:
    """D's eval-mode view of the rollouts in columns ``cols`` of the prompts ``prompts`` (module
    docstring); ``t_score`` is the wall time of scoring them, per clip."""
    idx = torch.as_tensor(prompts)
    roll = data.rollouts[idx][:, cols]
    n, g = roll.shape[:2]
    flat = roll.reshape(n * g, *roll.shape[2:])
    sub_text = text.index(idx)
    t0 = time.time()
    teacher, flat = rerender_pair(ref, codec, data.teacher[idx], flat, sub_text, cfg.disc.rerender_t,
                                  torch.Generator().manual_seed(gen_seed), cfg.train.amp)
    d_t, d_s, stats = score_pairs(disc, cfg.disc, teacher, flat, sub_text)
    t_score = (time.time() - t0) / (n * g + n)
    groups = group_ids(n, g)
    meas = {m: data.measures[m][prompts][:, cols] for m in MEASURES}
    pc = meas["physical_consistency"]
    w = compute_weights(d_s, groups, cfg.afd.advantage).weights.numpy()
    w_oracle = compute_weights(torch.from_numpy(pc.reshape(-1)).float(), groups, cfg.afd.advantage).weights.numpy()
    out = {"oracle": spearman(w, w_oracle), "pc": spearman(w, pc.reshape(-1)),
           "within": _within(d_s.numpy().reshape(n, g), pc),
           **dict(zip(("lift", "lift_max"), pick_lift(w, pc.reshape(-1), groups.numpy()))),
           "acc": stats["d_acc"], "r_phi": stats["r_phi"], "r_phi_p10": stats["r_phi_p10"],
           "r_phi_p90": stats["r_phi_p90"], "sat": stats["r_phi_sat"], "t_score": t_score}
    out.update({f"cue_{c}": spearman(w, meas[c].reshape(-1)) for c in CUES})
    return out


def _finite(row: dict) -> dict:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}


def probe(cfg: AdaptConfig, out: Path, *, iters: int, every: int, n_prompts: int | None = None, rollouts: int = 8,
          held_prompts: int | None = None, seed: int = 0, cache_root: Path = Path("cache/probe"),
          negatives: str = "base") -> tuple[list[dict], dict]:
    """Train a fresh D on probe seed ``seed``'s training prompts as the loop would, for ``iters``
    iterations, and judge it on the held-out prompts every ``every`` (and at 0 and the end).
    ``held_prompts``: how many prompts are held out (default a quarter). Writes ``out/probe.jsonl``
    (one row per judgement), ``out/config.yaml`` and ``out/summary.json``; returns the rows and the
    summary: the last judgement's measures, ``s_per_iter`` (D's wall time per loop iteration:
    ``disc.steps`` steps plus scoring one iteration's batch) and ``seed``; NaN becomes None."""
    if iters < 1 or every < 1:
        raise ValueError(f"--iters and --every must be >= 1, got {iters} and {every}")
    _check_rollouts(rollouts)
    G = cfg.train.rollouts
    half = rollouts // 2
    if G > half:
        raise ValueError(f"train.rollouts={G} exceeds the {half} training rollouts per prompt "
                         f"(--rollouts {rollouts}: half train, half held out)")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(seed)
    base_dir = resolve_checkpoint(cfg.student.checkpoint)
    ref = load_student_model(base_dir)  # rolls out; re-renders when disc.rerender_t > 0
    codec = make_codec(ref.config)
    data = probe_data(cfg, ref, file_sha256(base_dir / "model.safetensors"), n_prompts, rollouts, cache_root,
                      negatives)
    n = len(data.prompts)
    train_p, held_p = split_prompts(n, held_prompts if held_prompts is not None else max(1, n // 4), seed)
    P = min(cfg.train.prompts, len(train_p))
    text = get_text_encoder().encode(data.prompts)
    disc = Discriminator(cfg.disc.model)
    opt = torch.optim.AdamW(disc.trainable_parameters(), lr=cfg.disc.lr, betas=cfg.disc.betas,
                            weight_decay=cfg.disc.weight_decay)
    replay = ReplayBuffer(cfg.disc.replay) if cfg.disc.replay else None
    scorer = make_ema(disc) if cfg.disc.ema else disc
    train_cols, held_cols = slice(0, half), slice(half, rollouts)
    pc = data.measures["physical_consistency"][held_p][:, half:]
    print(f"probe-disc: seed {seed}: D trains on {len(train_p)} prompts x {half} rollouts, is judged on "
          f"{len(held_p)} other prompts x {rollouts - half} other rollouts ({negatives} negatives for training); "
          f"held-out physical consistency mean {pc.mean():.1f}, within-prompt std {pc.std(1).mean():.1f}")
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    path = out / "probe.jsonl"
    path.write_text("")
    t_train = 0.0

    def judge(it: int, stats: dict) -> None:
        row = {"iter": it, **stats, **judge_set(scorer, cfg, data, held_p, held_cols, text, ref, codec, seed),
               "train_oracle": judge_set(scorer, cfg, data, train_p, train_cols, text, ref, codec, seed)["oracle"],
               "t_train": t_train}
        rows.append(row)
        with open(path, "a") as f:
            f.write(json.dumps(_finite(row)) + "\n")
        print(f"probe-disc: iter {it:4d}  acc {row['acc']:.2f}  r_phi {row['r_phi']:.3f} (sat {row['sat']:.2f})  "
              f"oracle {row['oracle']:+.3f}  pc {row['pc']:+.3f}  within {row['within']:+.3f}  "
              f"train_oracle {row['train_oracle']:+.3f}  "
              + "  ".join(f"{c} {row['cue_' + c]:+.2f}" for c in CUES), flush=True)

    judge(0, {})
    for it in range(1, iters + 1):
        idx = np.sort(rng.choice(train_p, P, replace=False))
        cols = np.stack([rng.choice(half, G, replace=False) for _ in idx])
        roll = torch.stack([data.rollouts[i, c] for i, c in zip(idx, cols)]).reshape(P * G, *data.rollouts.shape[2:])
        teacher = data.teacher[idx]
        sub_text = text.index(torch.as_tensor(idx))
        prompts = [data.prompts[i] for i in idx]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        t0 = time.time()
        teacher, roll = rerender_pair(ref, codec, teacher, roll, sub_text, cfg.disc.rerender_t, gen, cfg.train.amp)
        stats = train_discriminator(disc, opt, cfg.disc, teacher, roll, prompts, sub_text, gen, replay=replay)
        if scorer is not disc:
            ema_update(scorer, disc, cfg.disc.ema)
        t_train += time.time() - t0
        if it % every == 0 or it == iters:
            judge(it, {"d_loss": stats.get("d_loss"), "d_acc_train": stats.get("d_acc_train")})
    last = rows[-1]
    s_per_iter = t_train / iters + last["t_score"] * (P * G + P)
    summary = {**{k: last[k] for k in SUMMARY_KEYS if k in last}, "s_per_iter": s_per_iter, "seed": seed,
               "iters": iters, **{f"cue_{c}": last[f"cue_{c}"] for c in CUES}}
    summary = {k: (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v
               for k, v in summary.items()}
    atomic_write_text(out / "summary.json",
                      json.dumps({**summary, "disc": config_to_dict(cfg)["disc"]}, indent=1) + "\n")
    return rows, summary


def probe_seeds(cfg: AdaptConfig, out: Path, seeds: list[int], **kw) -> dict:
    """``probe`` once per seed (``out/seed<s>/``), then ``out/summary.json``: per measure of
    ``SUMMARY_KEYS`` and the cues, the mean over seeds, ``<key>_se`` (seed std / sqrt(n), None for
    one seed) and the per-seed values ``<key>_seeds``."""
    if not seeds:
        raise ValueError("--seeds must name at least one seed")
    per_seed = [probe(cfg, out / f"seed{s}", seed=s, **kw)[1] for s in seeds]
    summary = aggregate(per_seed)
    atomic_write_text(out / "summary.json", json.dumps({**summary, "disc": config_to_dict(cfg)["disc"]},
                                                       indent=1) + "\n")
    return summary


def aggregate(per_seed: list[dict]) -> dict:
    """Mean, standard error and per-seed values of each summary measure over probe seeds."""
    out: dict = {"seeds": [s["seed"] for s in per_seed], "iters": per_seed[0].get("iters")}
    for k in (*SUMMARY_KEYS, *(f"cue_{c}" for c in CUES)):
        xs = np.asarray([s[k] if s.get(k) is not None else np.nan for s in per_seed], float)
        ok = xs[np.isfinite(xs)]
        out[k] = round(float(ok.mean()), 4) if ok.size else None
        out[f"{k}_se"] = round(float(ok.std(ddof=1) / math.sqrt(ok.size)), 4) if ok.size >= 2 else None
        out[f"{k}_seeds"] = [None if not math.isfinite(x) else round(float(x), 4) for x in xs]
    return out


def table(dirs: list[Path]) -> str:
    """A markdown table of finished multi-seed probes (their ``summary.json``), one row per
    directory, labelled by its last two path parts (e.g. state-chunk/lr1e-3): held-out Spearman
    with the oracle's weights and with PC, within-prompt, accuracy, r_phi, saturated share, the
    training prompts' oracle Spearman and D's seconds per iteration; ± is 2 standard errors over
    seeds."""
    lines = ["| D | seeds | oracle | PC | within | pick lift (max) | acc | r_phi | sat | train oracle | s / iter |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in dirs:
        path = Path(d) / "summary.json"
        finished = sorted(Path(d).glob("seed*/summary.json"))
        if path.exists():
            s = json.loads(path.read_text())
        elif finished:  # a probe stopped between seeds: the seeds it finished
            s = aggregate([json.loads(p.read_text()) for p in finished])
        else:
            raise ValueError(f"{path}: no summary.json (run afd probe-disc --out {d} first)")
        if "seeds" not in s:
            raise ValueError(f"{path}: a single-seed summary; the table reads multi-seed probes (--seeds)")

        def cell(k, fmt="+.2f", se_fmt=".2f"):
            v, se = s.get(k), s.get(f"{k}_se")
            if v is None:
                return "-"
            return f"{v:{fmt}}" + (f" ± {2 * se:{se_fmt}}" if se is not None else "")

        label = f"{Path(d).parent.name}/{Path(d).name}"
        lift = "-" if s.get("lift") is None else f"{cell('lift', '+.1f', '.1f')} ({s['lift_max']:.1f})"
        lines.append(f"| {label} | {len(s['seeds'])} | {cell('oracle')} | {cell('pc')} | {cell('within')} | "
                     f"{lift} | {cell('acc', '.2f')} | {cell('r_phi', '.3f')} | {cell('sat', '.2f')} | "
                     f"{cell('train_oracle')} | {s['s_per_iter']:.2f} |")
    return "\n".join(lines)
