"""Fingerprint tiny one-process runs of every method on the pixel and state students.

A refactor that must not change a number runs this before and after and compares the two JSON files:
each entry is the sha256 of the trained student's weights and of its metrics (timings dropped).

    python scripts/fingerprint.py --out /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from afd.cli import main  # noqa: E402
from train_util import make_tiny_student, tiny_args  # noqa: E402

METHODS = ("afd", "sft", "gan", "dmd", "oracle")
STUDENTS = {
    "pixel": {},
    "state": dict(codec="state", channels=10, height=1, width=1, patch=1, video_size=32, project_blocks=True),
}
# keys whose values are wall times, not numbers the run computes
TIMING_PREFIX = ("t_",)
TIMING_WORDS = ("time", "seconds", "elapsed", "mfu", "throughput")


def is_timing(key: str) -> bool:
    return key.startswith(TIMING_PREFIX) or any(w in key for w in TIMING_WORDS)


def weights_hash(path: Path) -> str:
    h = hashlib.sha256()
    tensors = load_file(str(path))
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def metrics_hash(path: Path) -> str:
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in sorted(row.items()) if not is_timing(k)})
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def json_hash(path: Path) -> str:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in sorted(x.items()) if not is_timing(k)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return hashlib.sha256(json.dumps(strip(json.loads(path.read_text())), sort_keys=True).encode()).hexdigest()


def main_() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        for family, cfg in STUDENTS.items():
            student = make_tiny_student(tmp / f"student-{family}", **cfg)
            for method in METHODS:
                run = tmp / f"{family}-{method}"
                rc = main(["train", "--no-progress", *tiny_args(student, run, cache, "train.steps=2", "train.amp=false",
                                                               "run.tensorboard=false", "train.device=cpu",
                                                               f"train.method={method}")])
                assert rc == 0, (family, method)
                evals = sorted(run.glob("eval*.json"))
                out[f"{family}/{method}"] = {"weights": weights_hash(run / "student" / "model.safetensors"),
                                             "metrics": metrics_hash(run / "metrics.jsonl"),
                                             "evals": {p.name: json_hash(p) for p in evals}}
                print(family, method, out[f"{family}/{method}"], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main_()
