"""A few AFD iterations on a real student checkpoint, when one is given; a no-op otherwise.

    AFD_REAL_STUDENT=runs/self-forcing/student python scripts/smoke_real.py [key=value ...]

``AFD_REAL_STUDENT`` is an afd student folder (``afd student import ...``'s output, e.g. a
Self-Forcing student with its Wan VAE and UMT5 paths). Without it the script prints
"skipped: ..." and exits 0, so CI and CPU machines can run it. With it, it runs
``afd train`` on ``configs/train/afd-self-forcing.yaml`` (``AFD_REAL_CONFIG`` to use another) for
``AFD_REAL_STEPS`` iterations (default 2) of 1 prompt x 2 rollouts against the built-in world
teacher (its clips are adapted to the student's format), with no judge, into
``AFD_REAL_RUN_DIR`` (default runs/smoke-real), and prints the seconds per iteration and the
peak GPU memory from the run's metrics. Further ``key=value`` arguments override the config
(e.g. ``train.device=cuda:1`` or ``teacher.spec=api:my_api.yaml``). Run it on one GPU first,
then under ``torchrun --nproc_per_node N`` (``train.prompts`` must then be a multiple of N).
docs/real-models.md has the whole recipe.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = "AFD_REAL_STUDENT"


def smoke_overrides(student: str, run_dir: str, steps: int, world_size: int) -> list[str]:
    """The overrides that turn the GPU config into a few-iteration smoke run."""
    return [f"student.checkpoint={student}", f"run.dir={run_dir}", f"train.steps={steps}",
            f"train.prompts={world_size}", "train.rollouts=2", "train.split=physics-train", "train.prompts_file=null",
            "teacher.spec=world", "teacher.prefetch=false", "eval.judge=none", "eval.strip_prompts=1",
            f"run.save_every={steps}"]


def main(argv: list[str]) -> int:
    student = os.environ.get(ENV, "").strip()
    if not student:
        print(f"skipped: set {ENV} to an afd student folder (e.g. runs/self-forcing/student) to run a real checkpoint")
        return 0
    if not Path(student).is_dir():
        print(f"smoke_real: {ENV}={student}: no such folder", file=sys.stderr)
        return 2
    config = os.environ.get("AFD_REAL_CONFIG", str(REPO / "configs" / "train" / "afd-self-forcing.yaml"))
    run_dir = os.environ.get("AFD_REAL_RUN_DIR", "runs/smoke-real")
    steps = int(os.environ.get("AFD_REAL_STEPS", "2"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    from afd.cli import main as afd_main

    t0 = time.time()
    rc = afd_main(["train", "--no-progress", "--config", config,
                   *smoke_overrides(student, run_dir, steps, world_size), *argv])
    if rc != 0:
        return rc
    if int(os.environ.get("RANK", "0")) == 0:
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        per_it = ", ".join(f"{r['seconds']:.1f}" for r in rows)
        print(f"smoke_real: {len(rows)} iterations in {time.time() - t0:.0f} s (s/iteration: {per_it})")
        try:
            import torch

            if torch.cuda.is_available():
                print(f"smoke_real: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
                      f"(this process)")
        except ImportError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
