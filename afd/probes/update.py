"""``afd probe-update``: where does a method's student update point, before any optimizer step?

An offline diagnostic of the update (docs/training.md, "Where the student update points"; its
results: reports/recipe/report.md), the counterpart of ``afd probe-disc`` for the discriminator.
With the run's own trainer (same collection, weights and loss, so ``train.method=oracle`` gives a
perfect ranking) it:

1. collects ``batches`` independent batches (iterations 0 .. batches - 1 of the run's plan) and
   takes ``draws`` gradients of the student loss on each, with different forward-noise draws, and
   the same for SFT's loss on the batches' teacher clips;
2. reports signal against noise for both: the gradient norm, the cosine between two noise draws
   on the same rollouts, the cosine between gradients of different batches, and ``|E g|``, the
   norm of the expected gradient estimated without bias from the cross-batch dot products;
3. turns each of three directions into the step an optimizer would take at the run's learning
   rate (``step``: AdamW's first step, which is ``g / (|g| + eps)`` per parameter plus the decoupled
   weight decay, or a plain sign step): the method's mean gradient, SFT's mean gradient (a
   control that must come out positive: SFT is the update that works in training) and a random
   Gaussian direction (a control that must come out near zero);
4. evaluates the student moved by ``+h`` and ``-h`` of each step, for each multiple ``h`` of the
   learning rate, on the eval splits with the same sampling seeds, and reports the central
   difference PC(+h) - PC(-h) over clips paired by prompt and seed, with its paired standard
   error. Along the step, a direction that raises PC gives a positive difference.

``branch`` keeps one side of the NFT loss (weights clamped to >= 0.5: only the pull toward the
better rollouts; <= 0.5: only the push away from the worse ones) to see which side moves what.

A raw gradient step scaled to an RMS move lands almost all of its move in the few parameters with
the largest gradients, so it damages every direction alike (reports/recipe/report.md); the
optimizer's own step and the two controls make the method's difference readable.
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

PROBED_METHODS = ("afd", "oracle", "sft")
BRANCHES = ("both", "positive", "negative")
STEP_RULES = ("adam", "sign")
DIRECTIONS = ("method", "sft", "random")  # the method's, and the two controls
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, as the trainer builds it


def _flat_grad(trainer, method, batch, prepared, seed: int, params) -> torch.Tensor:
    from afd.train.plan import generator

    with autocast(trainer.models.student, trainer.cfg.train.amp):
        out = method.student_loss(batch, prepared, generator(seed, 0, 0))
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


def optimizer_step(grad: list[torch.Tensor], params: list[torch.Tensor], lr: float, weight_decay: float,
                   rule: str) -> list[torch.Tensor]:
    """The parameter change an optimizer would make from ``grad`` (one tensor per parameter) at
    ``lr``: "adam" is AdamW's first step (bias-corrected moments m = g, v = g^2, so
    ``-lr (g / (|g| + eps) + weight_decay * p)``), "sign" is ``-lr sign(g)``."""
    if rule not in STEP_RULES:
        raise ValueError(f"step must be one of {STEP_RULES}, got {rule!r}")
    if rule == "sign":
        return [-lr * torch.sign(g) for g in grad]
    return [-lr * (g / (g.abs() + ADAM_EPS) + weight_decay * p.detach()) for g, p in zip(grad, params)]


def moved_copy(model, delta: list[torch.Tensor], h: float):
    """A copy of ``model`` with ``h * delta`` added to its trainable parameters (in eval mode)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p, d in zip([p for p in out.parameters() if p.requires_grad], delta):
            p += h * d.to(p.dtype)
    return out.eval()


def paired_difference(plus: list[float | None], minus: list[float | None]) -> tuple[float, float, int]:
    """Mean and standard error of ``plus - minus`` over the pairs where both are defined (clips
    paired by prompt and seed); returns (mean, stderr, pairs)."""
    d = np.array([a - b for a, b in zip(plus, minus) if a is not None and b is not None], dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


def _score(model, cfg: AdaptConfig, per_prompt: int) -> dict:
    """The eval splits' scores of ``model``, same seeds every call: headline numbers and the
    per-clip physical consistency (None where a clip has none) in a fixed order."""
    from afd.eval.student import eval_prompts, sample_and_score

    report, clips, _, _ = sample_and_score(model, eval_prompts(cfg.eval.final_prompts_per_split), per_prompt,
                                           cfg.eval.seed)
    phys, gen = report["groups"]["physics"], report["groups"]["general"]
    return {"physical_consistency": phys["physical_consistency"], "general_total": gen["total"],
            "dynamic_degree": phys["dynamic_degree"], "per_clip_pc": [c.physical_consistency for c in clips]}


def _unflatten(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(flat[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


def probe_update(cfg: AdaptConfig, out: Path, *, batches: int = 8, draws: int = 2,
                 multiples: tuple[float, ...] = (1.0, 2.0, 4.0), per_prompt: int = 8, branch: str = "both",
                 step: str = "adam", seed: int = 0) -> dict:
    """Run the probe (module docstring); writes ``out/probe.jsonl`` (one row per direction and
    multiple), ``out/summary.json`` and the resolved ``out/config.yaml``. ``multiples``: the step
    sizes h in units of the run's ``train.lr``; ``seed``: the random control direction's.
    Returns the summary."""
    from afd.methods import method_class
    from afd.train.loop import Trainer

    if cfg.train.method not in PROBED_METHODS:
        raise ValueError(f"afd probe-update probes the student update of {PROBED_METHODS}; train.method is "
                         f"{cfg.train.method!r}")
    if batches < 2 or draws < 1:
        raise ValueError(f"--batches must be >= 2 and --draws >= 1, got {batches} and {draws}")
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    if step not in STEP_RULES:
        raise ValueError(f"step must be one of {STEP_RULES}, got {step!r}")
    if not multiples or any(h <= 0 for h in multiples):
        raise ValueError(f"step multiples must be > 0, got {multiples}")
    cfg.run.dir, cfg.run.tensorboard = str(out), False
    (out / "probe.jsonl").unlink(missing_ok=True)
    trainer = Trainer(cfg, resume=False, progress=False)
    student = trainer.models.student
    sft = method_class("sft")(cfg, trainer.models, trainer.judge)
    params = [p for p in student.parameters() if p.requires_grad]
    t0 = time.time()
    grads: dict[str, list[list[torch.Tensor]]] = {"method": [], "sft": []}
    for it in range(batches):
        batch, _ = trainer.collect(it)
        if trainer.method.uses_discriminator:
            trainer.discriminator(batch, it)
        prepared = trainer.method.prepare(batch)
        if branch != "both" and prepared.weights is not None:
            w = prepared.weights
            prepared.weights = w.clamp_min(0.5) if branch == "positive" else w.clamp_max(0.5)
        grads["method"].append([_flat_grad(trainer, trainer.method, batch, prepared, 1000 * it + d, params)
                                for d in range(draws)])
        grads["sft"].append([_flat_grad(trainer, sft, batch, sft.prepare(batch), 1000 * it + d, params)
                             for d in range(draws)])
    stats = {name: gradient_statistics(g) for name, g in grads.items()}
    means = {name: _unflatten(torch.stack([x for row in g for x in row]).mean(0), params) for name, g in grads.items()}
    gen = torch.Generator().manual_seed(seed)
    means["random"] = [torch.randn(p.shape, generator=gen) for p in params]
    stats["seconds_gradients"] = time.time() - t0
    for name in ("method", "sft"):
        st = stats[name]
        print(f"probe-update: {name} gradient, {batches} batches x {draws} draws: |g| {st['grad_norm']:.4g}, "
              f"|E g| {st['expected_norm']:.4g}, cos same batch {st['cos_same_batch']:.3f}, cos other batch "
              f"{st['cos_other_batch']:.3f}", flush=True)
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    base = _score(student, cfg, per_prompt)
    print(f"  base: physical consistency {base['physical_consistency']:.1f}, general total "
          f"{base['general_total']:.1f}", flush=True)
    rows = []
    for name in DIRECTIONS:
        delta = optimizer_step(means[name], params, lr, wd, step)
        for h in multiples:
            plus, minus = _score(moved_copy(student, delta, h), cfg, per_prompt), \
                _score(moved_copy(student, delta, -h), cfg, per_prompt)
            diff, se, n = paired_difference(plus["per_clip_pc"], minus["per_clip_pc"])
            row = {"direction": name, "step": step, "multiple": h, "lr": lr, "central_pc": diff, "central_se": se,
                   "pairs": n, **{f"{k}_plus": v for k, v in plus.items() if k != "per_clip_pc"},
                   **{f"{k}_minus": v for k, v in minus.items() if k != "per_clip_pc"}}
            rows.append(row)
            with open(out / "probe.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"  {name:>6} step x{h:g}: PC(+h) - PC(-h) = {diff:+.2f} +- {se:.2f} ({n} pairs); "
                  f"PC {row['physical_consistency_plus']:.1f} / {row['physical_consistency_minus']:.1f}, "
                  f"general {row['general_total_plus']:.1f} / {row['general_total_minus']:.1f}", flush=True)
    sft_rows = [r for r in rows if r["direction"] == "sft"]
    summary = {"gradients": stats, "batches": batches, "draws": draws, "per_prompt": per_prompt, "branch": branch,
               "step": step, "lr": lr, "multiples": list(multiples), "seed": seed,
               "base": {k: v for k, v in base.items() if k != "per_clip_pc"}, "rows": rows,
               # The control that must hold for the probe to be read: SFT's step raises PC somewhere.
               "sft_control_positive": any(r["central_pc"] > 2 * r["central_se"] for r in sft_rows)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
