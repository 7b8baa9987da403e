"""HTTPTeacher against the real afd server on loopback: both protocols, the cache path the trainer
uses, retries, final errors, auth and the API adapter."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from afd.cli import main as cli_main
from afd.teacher import CachedTeacher, TeacherError, make_teacher, to_student_format
from afd.teacher.http import HTTPTeacher, parse_retry_after
from afd.teacher.payload import encode_clip
from afd.video.core import STUDENT, VideoFormat, stack
from afd.video.io import read_video
from afd.world.splits import load_split
from afd.world.teacher import WorldTeacher
from http_util import TinyTeacher, fast_client_kwargs, mean_abs, serve

WORLD_SMALL = VideoFormat(frames=8, height=16, width=16, fps=8.0)


@pytest.fixture(scope="module")
def world_prompts():
    return load_split("pretrain")[:6]


@pytest.mark.parametrize("preset", ["afd-sync", "afd-jobs"])
def test_roundtrip_matches_the_teacher(preset, world_prompts):
    teacher = WorldTeacher(fmt=WORLD_SMALL)
    with serve(teacher) as (app, url):
        client = HTTPTeacher(url, api={"preset": preset, "poll_interval": 0.02}, **fast_client_kwargs())
        prompts = world_prompts[:4] + [world_prompts[0]]  # a repeat is fetched once, returned twice
        seeds = [0, 1, 2, 3, 0]
        got = client.sample(prompts, seeds)
        want = teacher.sample(prompts, seeds)
        service = app.state.service
    assert [v.format for v in got] == [WORLD_SMALL] * 5
    for g, w in zip(got, want):
        assert mean_abs(g, w) < 0.08  # mp4 on the wire is lossy, but close
    assert torch_equal(got[0], got[4])
    assert service.paid == 4 and set(service.generated.values()) == {1}
    assert client.stats["clips"] == 4
    if preset == "afd-jobs":
        assert client.stats["jobs_submitted"] == 4


def torch_equal(a, b) -> bool:
    return bool((a.frames == b.frames).all())


def test_make_teacher_url_through_cache_is_the_training_path(tmp_path, world_prompts):
    """What the trainer does with teacher.url=...: make_teacher + CachedTeacher + student format."""
    teacher = WorldTeacher(fmt=VideoFormat(frames=32, height=32, width=32, fps=16.0))
    with serve(teacher) as (app, url):
        remote = make_teacher(url)
        assert isinstance(remote, HTTPTeacher) and remote.id == url
        cached = CachedTeacher(remote, tmp_path, budget=10)
        prompts, seeds = world_prompts[:4], [0, 1, 0, 1]
        batch = stack(to_student_format(cached.sample(prompts, seeds), STUDENT))
        assert batch.shape == (4, STUDENT.frames, 3, STUDENT.height, STUDENT.width)
        assert batch.min() >= -1 and batch.max() <= 1
        assert app.state.service.paid == 4 and cached.stats.paid == 4
        requests_before = remote.stats["requests"]
        again = CachedTeacher(make_teacher(url), tmp_path, budget=10).sample(prompts, seeds)
        assert app.state.service.paid == 4  # second run: all from disk, nothing paid
        assert remote.stats["requests"] == requests_before
    assert all(torch_equal(a, b) for a, b in zip(again, cached.sample(prompts, seeds)))


def test_refused_prompt_is_final_and_the_rest_is_kept(tmp_path):
    with serve(TinyTeacher()) as (app, url):
        client = HTTPTeacher(url, **fast_client_kwargs())
        cached = CachedTeacher(client, tmp_path)
        with pytest.raises(TeacherError) as err:
            cached.sample(["a cat", "refuse this", "a dog"], [0, 0, 0])
        msg = str(err.value)
        assert "'refuse this'" in msg and "HTTP 422" in msg and "no clip for prompt" in msg
        assert client.stats["requests"] == 3  # no retry on a refusal
        assert cached.contains("a cat", 0) and cached.contains("a dog", 0)


def test_invalid_request_names_the_problem():
    with serve(TinyTeacher(), max_prompt_chars=20) as (app, url):
        client = HTTPTeacher(url, **fast_client_kwargs())
        with pytest.raises(TeacherError) as err:
            client.sample(["a prompt that is far too long for this server"], [3])
        assert "HTTP 422" in str(err.value) and "the limit is 20" in str(err.value) and "seed 3" in str(err.value)
        assert app.state.service.paid == 0 and client.stats["requests"] == 1
        with pytest.raises(ValueError, match="seed 0"):
            client.sample(["ok"], [-1])


def test_bearer_token(monkeypatch, caplog):
    secret = "s3cret-token-value"
    monkeypatch.setenv("AFD_TEST_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    with serve(TinyTeacher(), token_env="AFD_TEST_TOKEN") as (app, url):
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"  # health needs no token
        anon = HTTPTeacher(url, token_env="AFD_NO_SUCH_VAR", **fast_client_kwargs())
        with pytest.raises(TeacherError) as err:
            anon.sample(["a cat"], [0])
        assert "HTTP 401" in str(err.value) and "AFD_NO_SUCH_VAR" in str(err.value)
        monkeypatch.setenv("AFD_WRONG", "nope")
        with pytest.raises(TeacherError, match="invalid bearer token"):
            HTTPTeacher(url, token_env="AFD_WRONG", **fast_client_kwargs()).sample(["a cat"], [0])
        good = HTTPTeacher(url, token_env="AFD_TEST_TOKEN", **fast_client_kwargs())
        assert good.sample(["a cat"], [0])[0].frames.shape == (6, 3, 16, 16)
        assert app.state.service.paid == 1
    assert secret not in caplog.text and secret not in str(err.value)


def probed(responder) -> httpx.MockTransport:
    """A mock API: the client's one HEAD probe is answered 200, every other request by ``responder``."""
    return httpx.MockTransport(lambda r: httpx.Response(200) if r.method == "HEAD" else responder(r))


def test_retries_honour_retry_after_and_give_up_clearly(monkeypatch, capsys):
    clip = encode_clip(TinyTeacher().clip("a cat", 0))
    script = [httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow down"}}),
              httpx.Response(503, text="upstream busy"),
              httpx.Response(200, content=b"<html>oops</html>", headers={"Content-Type": "text/html"}),
              httpx.Response(200, content=clip.data, headers={"Content-Type": clip.media_type, **clip.headers})]
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return script[len(seen) - 1]

    waits = []
    monkeypatch.setattr(HTTPTeacher, "_wait", lambda self, s, cancel: waits.append(s))
    client = HTTPTeacher("http://api.invalid", transport=probed(handler), **fast_client_kwargs())
    video = client.sample(["a cat"], [0])[0]
    assert video.frames.shape == (6, 3, 16, 16) and len(seen) == 4
    retried = [line for line in capsys.readouterr().err.splitlines() if "retrying in" in line]
    assert len(retried) == 3 and "HTTP 429" in retried[0] and "'a cat' seed 0" in retried[0]  # shown, not only logged
    assert waits[0] >= 7 and all(w <= 0.2 for w in waits[1:])  # the server's hint wins over backoff
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1  # every retry is the same logical request
    assert json.loads(seen[0].content) == {"prompt": "a cat", "seed": 0}

    calls = []
    always = probed(lambda r: calls.append(r) or httpx.Response(503, text="down for maintenance"))
    client = HTTPTeacher("http://api.invalid", transport=always, **fast_client_kwargs(retries=2))
    with pytest.raises(TeacherError) as err:
        client.sample(["a cat"], [5])
    assert "'a cat' seed 5" in str(err.value) and "3 times" in str(err.value)
    assert "down for maintenance" in str(err.value) and len(calls) == 3

    calls.clear()
    forbidden = probed(lambda r: calls.append(r) or httpx.Response(403, json={"detail": "quota"}))
    with pytest.raises(TeacherError, match=r"HTTP 403\): quota"):
        HTTPTeacher("http://api.invalid", transport=forbidden, **fast_client_kwargs()).sample(["a cat"], [0])
    assert len(calls) == 1


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def closed_port() -> int:
    """A loopback port with nobody listening."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_fails_at_the_probe_without_retrying(tmp_path, monkeypatch, capsys):
    waits = []
    monkeypatch.setattr(HTTPTeacher, "_wait", lambda self, s, cancel: waits.append(s))
    url = f"http://127.0.0.1:{closed_port()}"
    client = HTTPTeacher(url)  # the default retry budget (8) would take minutes on a dead URL
    cached = CachedTeacher(client, tmp_path)
    with pytest.raises(TeacherError) as err:
        cached.sample(["a cat", "a dog"], [0, 0])
    assert url in str(err.value) and "nothing answers" in str(err.value) and "ConnectError" in str(err.value)
    assert waits == [] and client.stats["retries"] == 0 and client.stats["requests"] == 0
    assert cached.stats.paid == 0
    assert cli_main(["teacher", "sample", "--teacher", url, "--prompt", "a cat", "--out", str(tmp_path / "c.npz")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and url in err_lines[0] and "nothing answers" in err_lines[0]


def test_the_probe_runs_once_and_error_statuses_pass_it(tmp_path):
    with serve(TinyTeacher()) as (app, url):
        client = HTTPTeacher(url, **fast_client_kwargs())
        client.sample(["a cat"], [0])
        client.sample(["a dog"], [1])
        assert client.stats["probes"] == 1 and app.state.service.paid == 2
    heads = []
    down = httpx.MockTransport(lambda r: heads.append(r) or httpx.Response(503, text="busy"))
    client = HTTPTeacher("http://api.invalid", transport=down, **fast_client_kwargs(retries=1))
    with pytest.raises(TeacherError, match="failed 2 times"):  # got past the probe, then used its retries
        client.sample(["a cat"], [0])
    assert [r.method for r in heads] == ["HEAD", "POST", "POST"]


def test_credentials_in_the_url_are_redacted_and_not_the_cache_identity(tmp_path, capsys):
    from afd.teacher.urls import credential_free_url, redact_url

    secret_url = "https://alice:pw-s3cret@api.example.com/v1?api_key=k3y-s3cret&model=fast&token=t0k-s3cret"
    assert redact_url(secret_url) == "https://***@api.example.com/v1?api_key=***&model=fast&token=***"
    assert credential_free_url(secret_url) == "https://api.example.com/v1?model=fast"
    assert credential_free_url("http://h:8000/v1?keyframes=8") == "http://h:8000/v1?keyframes=8"  # not a key
    plain = "http://127.0.0.1:8000"
    assert redact_url(plain) == credential_free_url(plain) == plain  # existing caches keep their identity

    port = closed_port()
    client = HTTPTeacher(f"http://bob:pw-s3cret@127.0.0.1:{port}/?key=k3y-s3cret")
    assert client.id == f"http://127.0.0.1:{port}/"
    cached = CachedTeacher(client, tmp_path)
    with pytest.raises(TeacherError) as err:
        cached.sample(["a cat"], [0])
    shown = str(err.value) + repr(client) + cached.dir.name
    assert "s3cret" not in shown and "***" in str(err.value)
    other_key = CachedTeacher(HTTPTeacher(f"http://bob:new-key@127.0.0.1:{port}/?key=new"), tmp_path)
    assert other_key.dir == cached.dir  # a rotated key keeps the paid clips
    assert cli_main(["teacher", "sample", "--teacher", f"http://u:pw-s3cret@127.0.0.1:{port}", "--prompt", "a",
                     "--out", str(tmp_path / "c.npz")]) == 2
    assert "s3cret" not in capsys.readouterr().err

    with serve(TinyTeacher()) as (app, url):  # user info in a working URL: used, never shown or stored
        authed = url.replace("http://", "http://carol:pw-s3cret@")
        cached = CachedTeacher(HTTPTeacher(authed, **fast_client_kwargs()), tmp_path / "c2")
        assert cached.sample(["a cat"], [0])[0].frames.shape == (6, 3, 16, 16)
        assert cached.id == url and "s3cret" not in "".join(str(p) for p in (tmp_path / "c2").rglob("*"))
    retrying = HTTPTeacher("http://dave:pw-s3cret@api.invalid",
                           transport=probed(lambda r: httpx.Response(503, text="busy")),
                           **fast_client_kwargs(retries=1))
    with pytest.raises(TeacherError) as err:
        retrying.sample(["a cat"], [0])
    assert "s3cret" not in str(err.value) + capsys.readouterr().err


def test_bad_urls_and_options_are_clear():
    for bad in ["ftp://x", "http://", "127.0.0.1:8000", 5]:
        with pytest.raises(ValueError, match="teacher URL"):
            HTTPTeacher(bad)
    with pytest.raises(ValueError, match="concurrency"):
        HTTPTeacher("http://x", concurrency=0)
    with pytest.raises(ValueError, match="unknown API preset"):
        HTTPTeacher("http://x", api="openai")
    with pytest.raises(ValueError, match="'api:' needs a config file"):
        make_teacher("api:")


def test_cli_sample_from_url(tmp_path, capsys):
    with serve(TinyTeacher()) as (app, url):
        out = tmp_path / "clip.npz"
        assert cli_main(["teacher", "sample", "--teacher", url, "--prompt", "a cat", "--seed", "2",
                         "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
        assert read_video(out).frames.shape == (6, 3, 16, 16)
        assert cli_main(["teacher", "sample", "--teacher", url, "--prompt", "refuse me",
                         "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "afd teacher: error:" in err and "'refuse me'" in err and "Traceback" not in err
    assert cli_main(["teacher", "serve", "--host", "0.0.0.0", "--fault-rate", "0.2"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_journaled_job_unknown_to_the_server_is_submitted_again(tmp_path, caplog):
    from afd.teacher.cache import clip_key
    from afd.teacher.jobs import JobJournal

    with serve(TinyTeacher()) as (app, url):
        client = HTTPTeacher(url, api={"preset": "afd-jobs", "poll_interval": 0.02},
                             journal=tmp_path / "jobs.jsonl", **fast_client_kwargs())
        JobJournal(tmp_path / "jobs.jsonl").record(clip_key(url, "a cat", 0), "a cat", 0, "lost-job", "submitted")
        with caplog.at_level(logging.WARNING, logger="afd.teacher.http"):
            assert client.sample(["a cat"], [0])[0].frames.shape == (6, 3, 16, 16)
        assert "lost-job is unknown to the server" in caplog.text
        assert client.stats["jobs_resumed"] == 1 and client.stats["jobs_submitted"] == 1
        assert JobJournal(tmp_path / "jobs.jsonl").get(clip_key(url, "a cat", 0))["state"] == "collected"


def test_a_query_on_the_base_url_goes_to_every_api_request_and_nowhere_else():
    """``http://host/api?api_key=K``: each request to the API keeps its own path and carries the key
    as a parameter; a clip fetched from another host (storage) never sees it."""
    clip = encode_clip(TinyTeacher().clip("a cat", 0))
    seen = []

    def handler(request: httpx.Request):
        seen.append(request.url)
        if request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=clip.data, headers={"Content-Type": clip.media_type, **clip.headers})

    client = HTTPTeacher("http://api.test/api?api_key=K1", transport=httpx.MockTransport(handler),
                         **fast_client_kwargs())
    assert client.sample(["a cat"], [0])[0].frames.shape == (6, 3, 16, 16)
    head, post = seen
    assert head.path.rstrip("/") == "/api" and head.params.get("api_key") == "K1"
    assert post.path.startswith("/api/") and post.params.get("api_key") == "K1" and "K1" not in post.path
    assert not client._same_origin("https://storage.test/clip.mp4")
