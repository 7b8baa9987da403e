"""Seconds and peak memory per training iteration of each method, side by side.

Each method runs in its own process (so its peak RSS is its own) through the real loop
(``Trainer.iteration``) at the default batch of a config: one warm-up iteration, then ``--iters``
timed ones, reporting the mean wall time per iteration, the per-phase split (teacher, rollout,
discriminator, critic, student update, fidelity logging) and ``ru_maxrss``. ``s_per_iter``
leaves out the ``reward_fidelity`` logging (the world's exact evaluator on every rollout: a
testbed-only diagnostic), which is reported next to it.

The reference is an SFT step *at the same batch* as AFD's update (P x G clips), so the ratio
``afd / sft`` is the paper's efficiency argument measured: AFD's student update is a forward-process
loss (three forwards + one backward on the collected batch, no graph through the sampler), to
which the iteration adds the no-grad rollout and the discriminator. The structural minimum of an
AFD iteration is therefore (SFT step) + (2 no-grad forwards) + (rollout) + (D steps); the
breakdown prints each part. GAN and DMD backpropagate through one denoising step per block of a
fresh rollout instead.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

PHASES = ("t_teacher", "t_rollout", "t_disc", "t_critic", "t_student", "t_fidelity")


def child(method: str, config: str, iters: int, overrides: list[str]) -> dict:
    """Time ``iters`` iterations of ``method`` in this process; returns the figures."""
    from afd.config import load_config
    from afd.train.config import AdaptConfig
    from afd.train.loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(AdaptConfig, config, [*overrides, f"train.method={method}", f"run.dir={tmp}/run",
                                                "run.tensorboard=false"])
        if method == "sft":  # an SFT step at AFD's update batch (P x G clips): the same-batch reference
            cfg = load_config(AdaptConfig, config, [*overrides, f"train.method={method}", f"run.dir={tmp}/run",
                                                    "run.tensorboard=false",
                                                    f"train.prompts={cfg.train.prompts * cfg.train.rollouts}"])
        trainer = Trainer(cfg, resume=False, progress=False)
        if cfg.teacher.prefetch:
            trainer.teacher.prefetch()
        trainer.iteration(0)  # warm-up: allocator, kernels, text cache
        rows, t0 = [], time.time()
        for i in range(1, iters + 1):
            rows.append(trainer.iteration(i))
        wall = (time.time() - t0) / iters
    # reward_fidelity runs the world's exact evaluator on every rollout: a testbed diagnostic
    # that a real (GPU, black-box) run would not pay, so it is reported apart from the cost.
    fidelity = sum(r.get("t_fidelity", 0.0) for r in rows) / iters
    phases = {p: sum(r.get(p, 0.0) for r in rows) / iters for p in PHASES if any(p in r for r in rows)}
    batch = cfg.train.prompts * (cfg.train.rollouts if method != "sft" else 1)
    return {"s_per_iter": round(wall - fidelity, 4), "s_per_iter_with_fidelity_logging": round(wall, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "batch": batch, "phases": {k: round(v, 4) for k, v in phases.items()}}


def main(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "sft" not in methods:
        methods = ["sft", *methods]
    results = {}
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    for m in methods:
        cmd = [sys.executable, "-m", "afd.bench.iteration", m, args.config, str(args.iters), *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise RuntimeError(f"bench iteration: method {m!r} failed (exit {proc.returncode})")
        results[m] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[m]
        print(f"{m:>4}: {r['s_per_iter']:.3f} s/iter at batch {r['batch']}, peak RSS {r['peak_rss_mb']:.0f} MB; "
              + ", ".join(f"{k[2:]} {v:.3f}s" for k, v in r["phases"].items()))
    sft = results["sft"]["s_per_iter"]
    for m, r in results.items():
        if m != "sft":
            print(f"{m:>4} / sft = {r['s_per_iter'] / sft:.2f}x")
    if "afd" in results:
        ph = results["afd"]["phases"]
        sft_step = results["sft"]["phases"].get("t_student", sft)
        print(f"afd structural parts: rollout {ph.get('t_rollout', 0):.3f}s + D {ph.get('t_disc', 0):.3f}s + "
              f"NFT update {ph.get('t_student', 0):.3f}s (= {ph.get('t_student', 0) / sft_step:.2f}x the same-batch "
              f"SFT update {sft_step:.3f}s; the minimum is 1x + two no-grad forwards) + logging-only "
              f"fidelity {ph.get('t_fidelity', 0):.3f}s")
    print(json.dumps({m: {"s_per_iter": r["s_per_iter"], "peak_rss_mb": r["peak_rss_mb"]} for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    method, config, iters, *overrides = sys.argv[1:]
    print(json.dumps(child(method, config, int(iters), overrides)))
