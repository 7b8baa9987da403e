"""``afd probe-update``: where does a method's student update point, before any optimizer step?

An offline diagnostic of the update (docs/training.md, "Where the student update points"; its
results: reports/recipe/report.md), the counterpart of ``afd probe-disc`` for the discriminator.
With the run's own trainer (same collection, weights and loss, so ``train.method=oracle`` gives a
perfect ranking) it:

1. collects ``batches`` independent batches (iterations 0 .. batches - 1 of the run's plan) and
   takes ``draws`` gradients of the student loss on each, with different forward-noise draws;
2. reports signal against noise: the gradient norm, the cosine between two noise draws on the
   same rollouts, the cosine between gradients of different batches, and ``|E g|``, the norm of
   the expected gradient estimated without bias from the cross-batch dot products;
3. steps the initial student along the mean gradient (a plain gradient step, scaled so that each
   parameter moves ``rms`` on average) for each requested size, and evaluates every stepped
   student on the eval splits with the same sampling seeds (paired: the size is the only change).

``branch`` keeps one side of the NFT loss (weights clamped to >= 0.5: only the pull toward the
better rollouts; <= 0.5: only the push away from the worse ones) to see which side moves what.

If the expected direction raises the reward, small steps along it must raise it; if every size
lowers it while the gradients agree across batches, the direction itself is the problem, not
the noise of a batch. The evaluation also splits physical consistency into which physics a clip
follows (``gravity_within_5``: % of flying clips whose fitted gravity is within 5% of real) and
how precisely (``pc_ge_80``: % of clips whose trajectory fits real physics to ~0.2 px).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from afd.device import autocast
from afd.io_utils import atomic_write_text
from afd.train.config import AdaptConfig

PROBED_METHODS = ("afd", "oracle")
BRANCHES = ("both", "positive", "negative")


def _flat_grad(trainer, batch, prepared, seed: int, params) -> torch.Tensor:
    from afd.train.plan import generator

    with autocast(trainer.models.student, trainer.cfg.train.amp):
        out = trainer.method.student_loss(batch, prepared, generator(seed, 0, 0))
    return torch.cat([g.flatten().float() for g in torch.autograd.grad(out["loss"], params)])


def gradient_statistics(grads: list[list[torch.Tensor]]) -> dict[str, float]:
    """grads[i][d]: flat gradient of batch i under noise draw d (at least 2 batches, 1 draw).

    Returns ``grad_norm`` (mean norm), ``cos_same_batch`` (mean cosine between draws of one batch;
    NaN with one draw), ``cos_other_batch`` (mean cosine between first draws of different batches)
    and ``expected_norm`` (sqrt of the mean cross-batch dot product, floored at 0: the norm of the
    expected gradient, since independent batches share only it)."""
    cos = torch.nn.functional.cosine_similarity
    K, D = len(grads), len(grads[0])
    if K < 2:
        raise ValueError(f"gradient statistics need at least 2 batches, got {K}")
    same = [float(cos(g[a], g[b], dim=0)) for g in grads for a in range(D) for b in range(a + 1, D)]
    pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
    other = [float(cos(grads[i][0], grads[j][0], dim=0)) for i, j in pairs]
    dots = [float(grads[i][0] @ grads[j][0]) for i, j in pairs]
    return {"grad_norm": float(np.mean([float(x.norm()) for g in grads for x in g])),
            "cos_same_batch": float(np.mean(same)) if same else float("nan"),
            "cos_other_batch": float(np.mean(other)),
            "expected_norm": max(float(np.mean(dots)), 0.0) ** 0.5}


def stepped_copy(model, direction: list[torch.Tensor], rms: float):
    """A copy of ``model`` moved by ``-direction`` (a list matching its trainable parameters),
    scaled so the move's root-mean-square over all trainable parameters is ``rms``."""
    out = copy.deepcopy(model)
    params = [p for p in out.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    norm = float(torch.cat([d.flatten() for d in direction]).norm())
    if rms and norm > 0:
        scale = rms * n ** 0.5 / norm
        with torch.no_grad():
            for p, d in zip(params, direction):
                p -= scale * d.to(p.dtype)
    return out.eval()


def _score(model, cfg: AdaptConfig, per_prompt: int) -> dict[str, float]:
    from afd.eval.student import eval_prompts, sample_and_score

    report, clips, _, _ = sample_and_score(model, eval_prompts(cfg.eval.final_prompts_per_split), per_prompt,
                                           cfg.eval.seed)
    phys, gen = report["groups"]["physics"], report["groups"]["general"]
    pc = np.array([c.physical_consistency for c in clips if c.physical_consistency is not None])
    ge = np.array([c.gravity_error for c in clips if c.gravity_error is not None])
    return {"physical_consistency": phys["physical_consistency"],
            "pc_stderr": report["stderr"]["physics"]["physical_consistency"],
            "pc_ge_80": float(100 * (pc >= 80).mean()), "gravity_within_5": float(100 * (ge < 0.05).mean()),
            "gravity_error": phys["gravity_error"], "general_total": gen["total"]}


def probe_update(cfg: AdaptConfig, out: Path, *, batches: int = 8, draws: int = 2,
                 sizes: tuple[float, ...] = (0.0, 1e-6, 3e-6, 1e-5), per_prompt: int = 8,
                 branch: str = "both") -> dict:
    """Run the probe (module docstring); writes ``out/probe.jsonl`` (one row per step size),
    ``out/summary.json`` and the resolved ``out/config.yaml``. Returns the summary."""
    from afd.train.loop import Trainer

    if cfg.train.method not in PROBED_METHODS:
        raise ValueError(f"afd probe-update probes the NFT update of {PROBED_METHODS}; train.method is "
                         f"{cfg.train.method!r}")
    if batches < 2 or draws < 1:
        raise ValueError(f"--batches must be >= 2 and --draws >= 1, got {batches} and {draws}")
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    if any(s < 0 for s in sizes):
        raise ValueError(f"step sizes must be >= 0, got {sizes}")
    cfg.run.dir, cfg.run.tensorboard = str(out), False
    (out / "probe.jsonl").unlink(missing_ok=True)
    trainer = Trainer(cfg, resume=False, progress=False)
    student = trainer.models.student
    params = [p for p in student.parameters() if p.requires_grad]
    t0 = time.time()
    grads = []
    for it in range(batches):
        batch, _ = trainer.collect(it)
        if trainer.method.uses_discriminator:
            trainer.discriminator(batch, it)
        prepared = trainer.method.prepare(batch)
        if branch != "both":
            w = prepared.weights
            prepared.weights = w.clamp_min(0.5) if branch == "positive" else w.clamp_max(0.5)
        grads.append([_flat_grad(trainer, batch, prepared, 1000 * it + d, params) for d in range(draws)])
    stats = gradient_statistics(grads)
    mean = torch.stack([g for row in grads for g in row]).mean(0)
    direction, i = [], 0
    for p in params:
        direction.append(mean[i:i + p.numel()].view_as(p))
        i += p.numel()
    stats["seconds_gradients"] = time.time() - t0
    print(f"probe-update: {batches} batches x {draws} draws in {stats['seconds_gradients']:.0f}s: "
          f"|g| {stats['grad_norm']:.4g}, |E g| {stats['expected_norm']:.4g}, cos same batch "
          f"{stats['cos_same_batch']:.3f}, cos other batch {stats['cos_other_batch']:.3f}", flush=True)
    rows = []
    for rms in sizes:
        row = {"rms_step": rms, **_score(stepped_copy(student, direction, rms), cfg, per_prompt)}
        rows.append(row)
        with open(out / "probe.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  rms step {rms:.0e}: physical consistency {row['physical_consistency']:.1f} "
              f"(>= 80: {row['pc_ge_80']:.0f}%), gravity within 5% {row['gravity_within_5']:.0f}%, "
              f"general total {row['general_total']:.1f}", flush=True)
    summary = {**stats, "batches": batches, "draws": draws, "per_prompt": per_prompt, "branch": branch, "steps": rows}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
