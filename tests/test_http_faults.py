"""Fault injection on loopback: the server's own app behind the fault layer, the client under
CachedTeacher. Every clip must land in the cache exactly once, the server must generate (be paid
for) each distinct (prompt, seed) exactly once, permanent failures must be clear, and a client
killed mid-batch must resume without asking again for what it has or paying twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from afd.teacher import CachedTeacher, TeacherError
from afd.teacher.faults import KINDS, FaultConfig
from afd.teacher.http import HTTPTeacher
from http_util import TinyTeacher, fast_client_kwargs, serve

PROMPTS = [f"clip number {i}" for i in range(24)]


def run_batch(mode: str, faults: FaultConfig, cache_dir, n: int, **server_kw):
    """Fetch n clips through CachedTeacher from a faulty server; returns (app, cached, client)."""
    # Delay faults hold answers past the 0.3 s read timeout; honest answers take milliseconds.
    with serve(TinyTeacher(), faults=faults, **server_kw) as (app, url):
        client = HTTPTeacher(url, api={"preset": mode, "poll_interval": 0.02},
                             **fast_client_kwargs(read_timeout=0.3, retries=20))
        cached = CachedTeacher(client, cache_dir, budget=n)
        prompts, seeds = PROMPTS[:n], [i % 3 for i in range(n)]
        videos = cached.sample(prompts, seeds)
        assert len(videos) == n and all(v.frames.shape == (6, 3, 16, 16) for v in videos)
        return app, cached, client, list(zip(prompts, seeds))


def assert_each_clip_once(app, cached, keys):
    service = app.state.service
    assert all(cached.contains(p, s) for p, s in keys)
    index = [json.loads(line) for line in (cached.dir / "index.jsonl").read_text().splitlines()]
    assert sorted((e["prompt"], e["seed"]) for e in index) == sorted(keys)  # stored once each
    assert cached.stats.paid == cached.stats.paid_total == len(keys)
    assert service.paid == len(set(keys))  # paid calls == distinct (prompt, seed)
    assert set(service.generated) == set(keys) and set(service.generated.values()) == {1}


@pytest.mark.parametrize("mode", ["afd-sync", "afd-jobs"])
def test_mixed_faults_every_clip_cached_and_paid_once(mode, tmp_path):
    faults = FaultConfig(rate=0.35, delay=0.6, seed=7)
    app, cached, client, keys = run_batch(mode, faults, tmp_path, 24)
    assert_each_clip_once(app, cached, keys)
    injected = app.state.faults["i"].injected
    assert sum(injected.values()) > 0 and client.stats["retries"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_kind_alone(kind, tmp_path):
    faults = FaultConfig(rate=0.5, kinds=(kind,), delay=0.6, seed=3)
    app, cached, client, keys = run_batch("afd-sync", faults, tmp_path, 6)
    assert_each_clip_once(app, cached, keys)
    assert app.state.faults["i"].injected[kind] > 0


def test_permanent_failure_is_clear_and_costs_nothing(tmp_path):
    faults = FaultConfig(rate=1.0, kinds=("429",), retry_after=0.01)
    with serve(TinyTeacher(), faults=faults) as (app, url):
        client = HTTPTeacher(url, **fast_client_kwargs(retries=3))
        with pytest.raises(TeacherError) as err:
            CachedTeacher(client, tmp_path).sample(["a cat"], [1])
        assert app.state.service.paid == 0
    msg = str(err.value)
    assert "'a cat' seed 1" in msg and "failed 4 times" in msg and "HTTP 429" in msg and "injected fault" in msg


CLIENT = """
import sys
from afd.teacher.cache import CachedTeacher
from afd.teacher.http import HTTPTeacher
url, cache, mode, n, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
api = {"preset": mode, "poll_interval": 0.02}
if mode == "afd-jobs":
    api["idempotency_header"] = None  # only the journal may prevent paying twice
client = HTTPTeacher(url, api=api, concurrency=concurrency, read_timeout=10)
CachedTeacher(client, cache).sample([f"clip number {i}" for i in range(n)], [0] * n)
print("finished the whole batch")
"""


def kill_mid_batch(url, cache_dir, mode, n, concurrency, tmp_path, ready) -> None:
    """Run the client in a subprocess and SIGKILL it once ``ready()`` holds (bounded: 30 s)."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), url, str(cache_dir), mode, str(n), str(concurrency)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"client ended before the kill: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_sync_client_killed_mid_batch_resumes_without_rerequesting(tmp_path):
    n = 12
    keys = [(f"clip number {i}", 0) for i in range(n)]
    with serve(TinyTeacher(), workers=2, latency=0.15) as (app, url):
        service = app.state.service
        probe = CachedTeacher(HTTPTeacher(url), tmp_path / "cache")
        stored = lambda: sum(1 for _ in probe.dir.glob("clips/*/*.npz"))  # noqa: E731
        kill_mid_batch(url, tmp_path / "cache", "afd-sync", n, 4, tmp_path, lambda: stored() >= 3)
        had = {k for k in keys if probe.contains(*k)}
        assert 3 <= len(had) < n
        asked_before = service.requested.copy()

        client = HTTPTeacher(url, **fast_client_kwargs())
        cached = CachedTeacher(client, tmp_path / "cache")
        cached.sample([p for p, _ in keys], [s for _, s in keys])
        asked_after = service.requested - asked_before
        assert not set(asked_after) & had  # nothing it already had was requested again
        assert set(asked_after) == set(keys) - had
        assert cached.stats.paid == n - len(had) and cached.stats.paid_total == n
        assert service.paid == n and set(service.generated.values()) == {1}  # in-flight clips: replayed, not re-paid


def test_job_client_killed_mid_batch_collects_its_journaled_jobs(tmp_path):
    n = 8
    keys = [(f"clip number {i}", 0) for i in range(n)]
    with serve(TinyTeacher(), workers=2, latency=0.3) as (app, url):
        service = app.state.service
        probe = CachedTeacher(HTTPTeacher(url), tmp_path / "cache")
        journal = probe.dir / "jobs.jsonl"

        def ready():
            submitted = journal.exists() and journal.read_text().count('"submitted"') == n
            return submitted and sum(1 for _ in probe.dir.glob("clips/*/*.npz")) >= 2

        kill_mid_batch(url, tmp_path / "cache", "afd-jobs", n, n, tmp_path, ready)
        had = {k for k in keys if probe.contains(*k)}
        assert 2 <= len(had) < n

        client = HTTPTeacher(url, api={"preset": "afd-jobs", "poll_interval": 0.02, "idempotency_header": None},
                             **fast_client_kwargs())
        cached = CachedTeacher(client, tmp_path / "cache")
        cached.sample([p for p, _ in keys], [s for _, s in keys])
        assert all(cached.contains(*k) for k in keys)
        assert client.stats["jobs_submitted"] == 0 and client.stats["jobs_resumed"] == n - len(had)
        assert set(service.requested.values()) == {1}  # each job submitted once, across both runs
        assert service.paid == n and set(service.generated.values()) == {1}
