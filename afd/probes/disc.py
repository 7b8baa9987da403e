"""``afd probe-disc``: does a discriminator, trained the way ``afd train`` trains it, rank the base
student's rollouts by physics? An offline stand-in for AFD's first iterations that takes minutes
instead of a run, so discriminator designs can be compared by ``reward_fidelity`` directly.

Data (computed once, then cached under ``cache/probe/``, keyed by the base weights' sha256, the
split, the prompt count, the rollouts per prompt and the seed): the adaptation prompts' teacher
clips (through the same budgeted teacher cache as ``afd train``), R rollouts of the base per
prompt, and each rollout's exact measures (physical consistency and the rendering cues of
``afd.train.fidelity``). Rollouts ``0 .. R/2 - 1`` of a prompt are D's training data; the others
are held out.

Training: iterations of the loop's discriminator phase (``train_discriminator``: the same loss,
augmentations, instance noise, R1 and re-rendering), each on ``train.prompts`` prompts x
``train.rollouts`` of their training rollouts. The student never changes, so this measures D on
the base's distribution only - what AFD's first updates see.

Every ``every`` iterations, in eval mode, on all teacher clips and all held-out rollouts:
``acc``: pairwise accuracy (teacher above a held-out rollout of its prompt);
``fidelity``: Spearman of the AFD weights (``compute_weights``, baseline per prompt over its
held-out rollouts) with the rollouts' physical consistency - the loop's ``reward_fidelity``, over
the whole held-out set; ``within``: the mean over prompts of the Spearman of D's scores with
physical consistency among that prompt's held-out rollouts; ``cue_<name>``: the weights' Spearman
with each rendering cue; ``train_fidelity``: ``fidelity`` on the training rollouts (overfitting).
The world's evaluator is used for these measures only; D never sees them.
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
from afd.train.disc_phase import rerender_pair, score_pairs, train_discriminator
from afd.train.fidelity import spearman
from afd.train.teacher_clips import TeacherClips
from afd.video.core import stack
from afd.world.splits import load_split
from afd.world.teacher import WorldTeacher

MEASURES = ("physical_consistency", *CUES)
NEGATIVES = ("base", "loose")


@dataclass
class ProbeData:
    """prompts (N,); teacher (N, T, 3, H, W); rollouts (N, R, T, 3, H, W), both in [-1, 1];
    measures: name -> (N, R) float64 (``MEASURES``)."""

    prompts: list[str]
    teacher: torch.Tensor
    rollouts: torch.Tensor
    measures: dict[str, np.ndarray]


def _probe_prompts(split: str, n: int | None, seed: int) -> list[str]:
    pool = load_split(split)
    if n is None or n >= len(pool):
        return pool
    if n < 2:
        raise ValueError(f"--prompts must be >= 2, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False))
    return [pool[i] for i in idx]


def probe_data(cfg: AdaptConfig, student: StudentModel, base_sha: str, n_prompts: int | None,
               rollouts: int, seed: int, cache_root: Path, negatives: str = "base") -> ProbeData:
    """Teacher clips, rollouts of ``student`` (the base, whose weights hash to ``base_sha``) and
    their measures, from ``cache_root`` when already made.

    ``negatives="loose"`` replaces each prompt's training rollouts by clips of the loose world (the
    base's pretraining data: the same renderer as the teacher, physics drawn per clip), a
    diagnostic only a simulator allows: D then cannot key on the student's rendering, so the probe
    measures whether it can learn the physics at all from the teacher clips."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    _check_rollouts(rollouts)
    prompts = _probe_prompts(cfg.train.split, n_prompts, seed)
    key = f"{base_sha[:16]}-{cfg.train.split}-n{len(prompts)}-r{rollouts}-s{seed}"
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
    flat_s = [seed * 1_000_003 + j for _ in prompts for j in range(rollouts)]
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
    if rollouts < 2 or rollouts % 2:
        raise ValueError(f"--rollouts must be an even number >= 2 (half train, half held out), got {rollouts}")


def _within(scores: np.ndarray, pc: np.ndarray) -> float:
    vals = [spearman(s, p) for s, p in zip(scores, pc)]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _judge(disc, cfg: AdaptConfig, data: ProbeData, cols: slice, text, ref, codec, gen_seed: int) -> dict[str, float]:
    """D's eval-mode view of the rollouts in columns ``cols`` of every prompt (see module docstring)."""
    n = data.rollouts.shape[0]
    roll = data.rollouts[:, cols]
    g = roll.shape[1]
    flat = roll.reshape(n * g, *roll.shape[2:])
    teacher, flat = rerender_pair(ref, codec, data.teacher, flat, text, cfg.disc.rerender_t,
                                  torch.Generator().manual_seed(gen_seed), cfg.train.amp)
    d_t, d_s, stats = score_pairs(disc, cfg.disc, teacher, flat, text)
    groups = group_ids(n, g)
    w = compute_weights(d_s, groups, cfg.afd.advantage).weights.numpy()
    meas = {m: data.measures[m][:, cols] for m in MEASURES}
    pc = meas["physical_consistency"].reshape(-1)
    out = {"acc": stats["d_acc"], "r_phi": stats["r_phi"], "fidelity": spearman(w, pc),
           "within": _within(d_s.numpy().reshape(n, g), meas["physical_consistency"]),
           "score_fidelity": spearman(d_s.numpy(), pc)}
    out.update({f"cue_{c}": spearman(w, meas[c].reshape(-1)) for c in CUES})
    return out


def probe(cfg: AdaptConfig, out: Path, *, iters: int, every: int, n_prompts: int | None = None, rollouts: int = 8,
          seed: int = 0, cache_root: Path = Path("cache/probe"), negatives: str = "base") -> tuple[list[dict], dict]:
    """Train a fresh D as the loop would for ``iters`` iterations and judge it every ``every``
    (and at 0 and the end). Writes ``out/probe.jsonl`` (one row per judgement), ``out/config.yaml``
    and ``out/summary.json``; returns the rows and the summary (last judgement's ``fidelity``,
    ``within``, ``acc``, and the best ``fidelity`` with its iteration; NaN becomes None)."""
    if iters < 1 or every < 1:
        raise ValueError(f"--iters and --every must be >= 1, got {iters} and {every}")
    _check_rollouts(rollouts)
    G = cfg.train.rollouts
    if G > rollouts // 2:
        raise ValueError(f"train.rollouts={G} exceeds the {rollouts // 2} training rollouts per prompt "
                         f"(--rollouts {rollouts}: half train, half held out)")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(seed)
    base_dir = resolve_checkpoint(cfg.student.checkpoint)
    ref = load_student_model(base_dir)  # rolls out; re-renders when disc.rerender_t > 0
    codec = make_codec(ref.config)
    data = probe_data(cfg, ref, file_sha256(base_dir / "model.safetensors"), n_prompts, rollouts, seed, cache_root,
                      negatives)
    n = len(data.prompts)
    P = min(cfg.train.prompts, n)
    text = get_text_encoder().encode(data.prompts)
    disc = Discriminator(cfg.disc.model)
    opt = torch.optim.AdamW(disc.trainable_parameters(), lr=cfg.disc.lr, betas=cfg.disc.betas,
                            weight_decay=cfg.disc.weight_decay)
    half = rollouts // 2
    train_cols, held_cols = slice(0, half), slice(half, rollouts)
    pc = data.measures["physical_consistency"]
    print(f"probe-disc: {n} prompts x {rollouts} clips ({negatives} negatives for training); "
          f"held-out physical consistency mean "
          f"{pc[:, half:].mean():.1f}, within-prompt std {pc[:, half:].std(1).mean():.1f}")
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    path = out / "probe.jsonl"
    path.write_text("")
    t_train = 0.0

    def judge(it: int, stats: dict) -> None:
        row = {"iter": it, **stats, **_judge(disc, cfg, data, held_cols, text, ref, codec, seed),
               "train_fidelity": _judge(disc, cfg, data, train_cols, text, ref, codec, seed)["fidelity"],
               "t_train": t_train}
        rows.append(row)
        with open(path, "a") as f:
            f.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                for k, v in row.items()}) + "\n")
        print(f"probe-disc: iter {it:4d}  acc {row['acc']:.2f}  fidelity {row['fidelity']:+.3f}  "
              f"within {row['within']:+.3f}  train_fidelity {row['train_fidelity']:+.3f}  "
              + "  ".join(f"{c} {row['cue_' + c]:+.2f}" for c in CUES), flush=True)

    judge(0, {})
    for it in range(1, iters + 1):
        idx = np.sort(rng.choice(n, P, replace=False))
        cols = np.stack([rng.choice(half, G, replace=False) for _ in idx])
        roll = torch.stack([data.rollouts[i, c] for i, c in zip(idx, cols)]).reshape(P * G, *data.rollouts.shape[2:])
        teacher = data.teacher[idx]
        sub_text = text.index(torch.as_tensor(idx))
        prompts = [data.prompts[i] for i in idx]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        t0 = time.time()
        teacher, roll = rerender_pair(ref, codec, teacher, roll, sub_text, cfg.disc.rerender_t, gen, cfg.train.amp)
        stats = train_discriminator(disc, opt, cfg.disc, teacher, roll, prompts, sub_text, gen)
        t_train += time.time() - t0
        if it % every == 0 or it == iters:
            judge(it, {"d_loss": stats.get("d_loss"), "d_acc_train": stats.get("d_acc_train")})
    best = max(rows, key=lambda r: r["fidelity"] if math.isfinite(r["fidelity"]) else -2)
    summary = {"fidelity": rows[-1]["fidelity"], "within": rows[-1]["within"], "acc": rows[-1]["acc"],
               "best_fidelity": best["fidelity"], "best_iter": best["iter"], "train_seconds": round(t_train, 1)}
    summary = {k: (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v
               for k, v in summary.items()}
    atomic_write_text(out / "summary.json",
                      json.dumps({**summary, "disc": config_to_dict(cfg)["disc"]}, indent=1) + "\n")
    return rows, summary
