"""The teacher server's contract (validation, idempotency, jobs), payload validation, the job
journal, and the API adapter pointed at a differently shaped job API."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from afd.teacher import TeacherError, make_teacher
from afd.teacher.api import APISpec, get_field, render_template
from afd.teacher.jobs import JobJournal
from afd.teacher.payload import H_FRAMES, H_SHA256, ClipLimits, PayloadError, decode_clip, encode_clip
from afd.teacher.server import running_server
from http_util import TinyTeacher, mean_abs, serve


@pytest.fixture(scope="module")
def server():
    with serve(TinyTeacher(delay=0.05), max_prompt_chars=50) as (app, url):
        with httpx.Client(base_url=url, timeout=10) as http:
            yield app, http


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"prompt": "a cat"}', 422, "missing field 'seed'"),
    (b'{"prompt": "a cat", "seed": 1, "sed": 2}', 422, "unknown field(s) 'sed'"),
    (b'{"prompt": 3, "seed": 1}', 422, "'prompt' must be a string"),
    (b'{"prompt": "   ", "seed": 1}', 422, "must not be empty"),
    (json.dumps({"prompt": "x" * 51, "seed": 1}).encode(), 422, "51 characters; the limit is 50"),
    (b'{"prompt": "a cat", "seed": -1}', 422, "0..2^63-1, got -1"),
    (b'{"prompt": "a cat", "seed": 1.5}', 422, "must be an integer, got float"),
    (b'{"prompt": "a cat", "seed": true}', 422, "must be an integer, got bool"),
    (b'{"prompt": "a cat", "seed": 99999999999999999999}', 422, "0..2^63-1"),
    (json.dumps({"prompt": "x" * 70000, "seed": 1}).encode(), 413, "the limit is 65536"),
])
def test_request_validation(server, body, status, words):
    app, http = server
    for path in ("/v1/videos", "/v1/jobs"):
        r = http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert words in r.json()["error"]["message"]
    assert app.state.service.paid == 0


def test_sync_response_envelope_and_idempotency(server):
    app, http = server
    service = app.state.service
    before = service.paid
    headers = {"Idempotency-Key": "k-envelope"}
    r1 = http.post("/v1/videos", json={"prompt": "a cat", "seed": 4}, headers=headers)
    r2 = http.post("/v1/videos", json={"prompt": "a cat", "seed": 4}, headers=headers)
    assert r1.status_code == r2.status_code == 200
    assert r1.headers["content-type"] == "video/mp4" and r1.content == r2.content
    assert r1.headers[H_FRAMES] == "6" and r1.headers["X-AFD-Height"] == "16" and r1.headers["X-AFD-FPS"] == "8.0"
    assert r1.headers["X-AFD-Teacher"] == "tiny-6x16" and r1.headers["X-AFD-Job"] == r2.headers["X-AFD-Job"]
    assert service.paid == before + 1  # the replay was free
    video = decode_clip(r1.content, r1.headers)
    assert mean_abs(video, TinyTeacher().clip("a cat", 4)) < 0.05
    r3 = http.post("/v1/videos", json={"prompt": "a dog", "seed": 4}, headers=headers)
    assert r3.status_code == 422 and "already used for another request" in r3.json()["error"]["message"]
    http.post("/v1/videos", json={"prompt": "a cat", "seed": 4})  # no key: a new, paid request
    assert service.paid == before + 2


def test_job_lifecycle(server):
    app, http = server
    r = http.post("/v1/jobs", json={"prompt": "a bird", "seed": 1}, headers={"Idempotency-Key": "k-job"})
    assert r.status_code == 202
    job = r.json()
    assert job["status"] in ("queued", "running") and job["prompt"] == "a bird" and job["seed"] == 1
    early = http.get(f"/v1/jobs/{job['id']}/video")
    assert early.status_code in (200, 409)  # 409 unless the 50 ms generation already finished
    again = http.post("/v1/jobs", json={"prompt": "a bird", "seed": 1}, headers={"Idempotency-Key": "k-job"})
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    for _ in range(200):
        status = http.get(f"/v1/jobs/{job['id']}").json()
        if status["status"] == "succeeded":
            break
        threading.Event().wait(0.01)
    assert status["video_url"] == f"/v1/jobs/{job['id']}/video"
    video = http.get(status["video_url"])
    assert video.status_code == 200 and decode_clip(video.content, video.headers).frames.shape == (6, 3, 16, 16)
    missing = http.get("/v1/jobs/nope")
    assert missing.status_code == 404 and "unknown job 'nope'" in missing.json()["error"]["message"]
    bad = http.post("/v1/jobs", json={"prompt": "refuse it", "seed": 0})
    for _ in range(200):
        failed = http.get(f"/v1/jobs/{bad.json()['id']}").json()
        if failed["status"] == "failed":
            break
        threading.Event().wait(0.01)
    assert "refused prompt 'refuse it'" in failed["error"]["message"]
    health = http.get("/healthz").json()
    assert health["teacher"] == "tiny-6x16" and health["clips_generated"] == app.state.service.paid


def test_payload_validation():
    clip = encode_clip(TinyTeacher().clip("a cat", 0))
    assert decode_clip(clip.data, clip.headers).frames.shape == (6, 3, 16, 16)
    cases = [
        (b"", {}, "empty body"),
        (b"<html>502</html>", {}, "not an mp4, gif or npz"),
        (clip.data[: len(clip.data) // 2], {}, "does not decode"),
        (clip.data[:-50], clip.headers, "does not match its X-AFD-SHA256"),
        (clip.data, {**clip.headers, H_FRAMES: "7"}, "X-AFD-Frames says 7"),
        (clip.data, {**clip.headers, "X-AFD-FPS": "30"}, "X-AFD-FPS says 30"),
    ]
    for data, headers, words in cases:
        with pytest.raises(PayloadError, match=words.replace("(", r"\(")):
            decode_clip(data, headers)
    with pytest.raises(PayloadError, match="expected 1..4"):
        decode_clip(clip.data, {}, ClipLimits(max_frames=4))
    with pytest.raises(PayloadError, match="limit of 100"):
        decode_clip(clip.data, {}, ClipLimits(max_bytes=100))
    npz = encode_clip(TinyTeacher().clip("a cat", 0), ".npz")
    assert decode_clip(npz.data, {k: v for k, v in npz.headers.items() if k != H_SHA256}).fps == 8.0


def test_journal_survives_a_torn_line(tmp_path):
    path = tmp_path / "jobs.jsonl"
    j = JobJournal(path)
    j.record("k1", "a cat", 0, "job-1", "submitted")
    j.record("k2", "a dog", 1, "job-2", "submitted")
    with open(path, "a") as f:
        f.write('{"key": "k3", "prompt": "a b')  # a kill in the middle of a write
    j2 = JobJournal(path)
    assert j2.job_id("k1") == "job-1" and j2.get("k3") is None
    j2.record("k2", "a dog", 1, "job-2", "collected")
    j2.record("k4", "a fox", 2, "job-4", "failed")
    j3 = JobJournal(path)
    assert j3.get("k2")["state"] == "collected" and j3.job_id("k2") == "job-2"
    assert j3.job_id("k4") is None  # a failed job is not collected again
    assert [r["key"] for r in j3.pending()] == ["k1"]


def test_api_spec_helpers_and_errors():
    body = {"model": "m1", "input": {"text": "{prompt}", "seed": "{seed}", "note": "for {prompt}"}, "n": [1]}
    assert render_template(body, "a cat", 7) == {"model": "m1", "input": {"text": "a cat", "seed": 7,
                                                                          "note": "for a cat"}, "n": [1]}
    assert get_field({"a": [{"b": "x"}]}, "a.0.b") == "x"
    with pytest.raises(KeyError, match="no field 'c' at a.0"):
        get_field({"a": [{"b": "x"}]}, "a.0.c")
    with pytest.raises(ValueError, match="mode"):
        APISpec(mode="batch")
    with pytest.raises(ValueError, match="must contain '\\{job_id\\}'"):
        APISpec(mode="jobs", status_path="/status")
    with pytest.raises(ValueError, match="poll_interval"):
        APISpec(poll_interval=0)


def test_config_file_errors(tmp_path):
    cfg = tmp_path / "api.yaml"
    cfg.write_text("url: http://127.0.0.1:1\nmode: jobs\nsubmit_paht: /x\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) 'submit_paht'"):
        make_teacher(f"api:{cfg}")
    cfg.write_text("mode: jobs\n")
    with pytest.raises(ValueError, match="api.yaml: missing required key 'url'"):
        make_teacher(f"api:{cfg}")
    cfg.write_text("url: http://127.0.0.1:1\nconcurrency: 0\n")
    with pytest.raises(ValueError, match="api.yaml: HTTPTeacher concurrency"):
        make_teacher(f"api:{cfg}")
    with pytest.raises(ValueError, match="not found"):
        make_teacher(f"api:{tmp_path / 'missing.yaml'}")


def _foreign_api(where: dict, teacher: TinyTeacher, seen: dict):
    """A job API shaped unlike afd's: nested fields, other status words, absolute download URLs
    on another origin, an x-api-key header."""
    app = FastAPI()
    tasks = {}

    @app.post("/api/generate")
    async def generate(request: Request):
        body = await request.json()
        seen.setdefault("auth", []).append(request.headers.get("x-api-key"))
        tid = f"t{len(tasks)}"
        tasks[tid] = {"polls": 0, "prompt": body["input"]["text"], "seed": body["input"]["seed"]}
        return {"data": {"task_id": tid}}

    @app.get("/api/tasks/{tid}")
    async def status(tid: str):
        t = tasks[tid]
        t["polls"] += 1
        if t["polls"] < 2:
            return {"data": {"state": "PROCESSING"}}
        if t["prompt"].startswith("refuse"):
            return {"data": {"state": "FAILED", "reason": "content policy"}}
        return {"data": {"state": "SUCCESS", "outputs": [{"url": f"{where['storage']}/files/{tid}.mp4"}]}}

    storage = FastAPI()

    @storage.get("/files/{name}")
    async def files(name: str, request: Request):
        seen.setdefault("storage_auth", []).append(request.headers.get("x-api-key"))
        t = tasks.get(name.removesuffix(".mp4"))
        if t is None:
            return JSONResponse({"message": "no such file"}, status_code=404)
        clip = encode_clip(teacher.clip(t["prompt"], t["seed"]))
        return Response(clip.data, media_type="application/octet-stream")  # no X-AFD-* headers

    return app, storage


def test_adapter_drives_a_differently_shaped_job_api(tmp_path, monkeypatch):
    teacher, seen, where = TinyTeacher(), {}, {}
    api_app, storage_app = _foreign_api(where, teacher, seen)
    with running_server(storage_app) as where["storage"]:
        with running_server(api_app) as api_url:
            monkeypatch.setenv("VENDOR_KEY", "k-123")
            cfg = tmp_path / "vendor.yaml"
            cfg.write_text(f"""
url: {api_url}
id: vendor-model-1
mode: jobs
submit_path: /api/generate
body: {{model: m1, input: {{text: "{{prompt}}", seed: "{{seed}}"}}}}
job_id_field: data.task_id
status_path: /api/tasks/{{job_id}}
status_field: data.state
done_values: [success]
failed_values: [failed]
error_field: data.reason
video_url_field: data.outputs.0.url
poll_interval: 0.01
token_env: VENDOR_KEY
auth_header: x-api-key
auth_scheme: ""
idempotency_header: null
journal: {tmp_path / "journal.jsonl"}
concurrency: 2
read_timeout: 5
""")
            client = make_teacher(f"api:{cfg}")
            assert client.id == "vendor-model-1"
            videos = client.sample(["a cat", "a dog"], [0, 3])
            assert mean_abs(videos[1], teacher.clip("a dog", 3)) < 0.05
            with pytest.raises(TeacherError, match="ended 'failed': content policy"):
                client.sample(["refuse please"], [0])
    assert seen["auth"] == ["k-123"] * 3
    assert seen["storage_auth"] == [None, None]  # the key never went to the storage origin
    journal = JobJournal(tmp_path / "journal.jsonl")
    assert {r["state"] for r in journal._jobs.values()} == {"collected", "failed"}


def test_finished_jobs_are_evicted_beyond_max_jobs():
    with serve(TinyTeacher(), max_jobs=2) as (app, url):
        with httpx.Client(base_url=url, timeout=10) as http:
            ids = [http.post("/v1/videos", json={"prompt": f"p{i}", "seed": 0}).headers["X-AFD-Job"]
                   for i in range(4)]
            assert http.get(f"/v1/jobs/{ids[0]}").status_code == 404
            assert http.get(f"/v1/jobs/{ids[3]}").json()["status"] == "succeeded"
