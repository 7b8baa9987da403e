"""Throughput of HTTPTeacher against a local `afd teacher serve` (a subprocess, loopback only).

Measures clips/s with 1, 4 and 16 concurrent requests, then 16 under a 20% fault rate (500/503/
429, delays past the read timeout, dropped connections, truncated and wrong bodies), for two
servers: the world teacher as it is (CPU-bound: simulate, render, mp4 encode and decode all share
this machine's cores) and the same with --latency added per clip (a remote API's wait, where
concurrency pays). Every run asks for distinct (prompt, seed) pairs, so nothing is replayed, and
checks the server generated exactly one clip per pair.

    .venv/bin/python benchmarks/http_teacher.py [--clips 48] [--latency 0.25]

Prints one line per figure; the last line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import httpx

from afd.teacher.http import HTTPTeacher
from afd.world.splits import load_split


def start_server(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "afd", "teacher", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"at (http://\S+) ", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, m.group(1)


def run(url: str, prompts: list[str], seeds: list[int], concurrency: int, **kw) -> tuple[float, HTTPTeacher]:
    client = HTTPTeacher(url, concurrency=concurrency, **kw)
    t0 = time.perf_counter()
    videos = client.sample(prompts, seeds)
    elapsed = time.perf_counter() - t0
    assert len(videos) == len(prompts)
    client.close()
    return len(prompts) / elapsed, client


def bench_server(label: str, server_args: list[str], clips: int, seed0: int, results: dict) -> int:
    base = load_split("pretrain")
    out = results.setdefault(label, {})
    for faults in (False, True):
        extra = ["--fault-rate", "0.2", "--fault-delay", "1.0", "--fault-seed", "1"] if faults else []
        proc, url = start_server(["--workers", "16", *server_args, *extra])
        try:
            run(url, [base[0]], [10**9 + seed0], 1)  # warm-up: imports, first encode
            runs = [("c16_faults20", 16)] if faults else [("c1", 1), ("c4", 4), ("c16", 16)]
            for name, c in runs:
                seeds = list(range(seed0, seed0 + clips))
                seed0 += clips
                prompts = [base[i % len(base)] for i in range(clips)]
                # Under faults, delayed answers must time out to be retried; honest ones take < 0.2 s.
                kw = dict(read_timeout=0.5, backoff=0.05, max_backoff=1.0, retries=20) if faults else {}
                rate, client = run(url, prompts, seeds, c, **kw)
                out[name] = round(rate, 2)
                note = f", {client.stats['retries']} retries" if faults else ""
                print(f"{label:>14}  concurrency {c:>2}{' + 20% faults' if faults else '':<14} "
                      f"{rate:7.2f} clips/s{note}", flush=True)
            health = httpx.get(f"{url}/healthz").json()
            expected = 1 + (clips if faults else 3 * clips)
            if health["clips_generated"] != expected:
                raise RuntimeError(f"{label}: server generated {health['clips_generated']} clips for {expected} "
                                   f"distinct requests")
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    return seed0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=48, help="clips per measurement (default 48)")
    ap.add_argument("--latency", type=float, default=0.25, help="per-clip latency of the second server (s)")
    args = ap.parse_args()
    results: dict = {"clips": args.clips}
    seed0 = bench_server("world", [], args.clips, 0, results)
    bench_server(f"world+{args.latency:g}s", ["--latency", str(args.latency)], args.clips, seed0, results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
