"""Any ``Teacher`` as an HTTP service (FastAPI), in the two shapes commercial video APIs have.

Protocol (the client's ``afd-sync`` and ``afd-jobs`` presets speak it):

``GET /healthz`` (no auth)
    ``200 {"status": "ok", "teacher": ID, "clips_generated": N, "jobs": N}``
``POST /v1/videos`` with ``{"prompt": str, "seed": int}`` -- synchronous
    ``200``, body = the clip as mp4 bytes (``Content-Type: video/mp4``), described by headers:
    ``X-AFD-Frames``, ``X-AFD-Height``, ``X-AFD-Width``, ``X-AFD-FPS`` (exact, the container
    rounds it), ``X-AFD-SHA256`` (digest of the body), ``X-AFD-Teacher`` (teacher id),
    ``X-AFD-Job`` (the job that made it).
``POST /v1/jobs`` with the same body -- job-based
    ``202 {"id", "status", "prompt", "seed"}`` (``200`` when an Idempotency-Key found an
    existing job).
``GET /v1/jobs/{id}``
    ``200 {"id", "status": "queued"|"running"|"succeeded"|"failed", "prompt", "seed",
    "video_url": "/v1/jobs/{id}/video" (once succeeded), "error": {"message"} (if failed)}``
``GET /v1/jobs/{id}/video``
    the clip as for ``/v1/videos``; ``409`` while the job is not finished.

Errors are ``{"error": {"code": str, "message": str}}`` with 400 (malformed body), 401 (token),
404 (unknown or expired job), 409, 413 (body too large), 422 (a field is invalid, or the teacher
refused the prompt), 500. An ``Idempotency-Key`` header on a POST makes retries free: the same
key and body return the same job, which is generated once; the same key with another body is a
422. Auth: when the environment variable named by ``token_env`` is set, every ``/v1`` request
needs ``Authorization: Bearer <token>`` (compared in constant time, never logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from afd.teacher.api import DEFAULT_TOKEN_ENV
from afd.teacher.base import Teacher, TeacherError
from afd.teacher.payload import H_JOB, H_TEACHER, EncodedClip, encode_clip

log = logging.getLogger("afd.teacher.server")

MAX_SEED = 2**63 - 1
MAX_BODY_BYTES = 64 * 1024


class RequestError(Exception):
    """A request the server refuses; becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Job:
    id: str
    prompt: str
    seed: int
    key: str | None
    future: Future

    @property
    def status(self) -> str:
        f = self.future
        if not f.done():
            return "running" if f.running() else "queued"
        return "failed" if f.cancelled() or f.exception() is not None else "succeeded"


def _is_refusal(exc: BaseException) -> bool:
    # The teacher saying no to this prompt (unknown words, no such clip) is the client's
    # problem and final; anything else is a server fault the client may retry.
    return isinstance(exc, (TeacherError, ValueError))


class ClipService:
    """Generates clips on a thread pool, one job per request, and remembers finished jobs (up to
    ``max_jobs``) so they can be polled, downloaded again and matched by idempotency key.

    ``generated`` counts clips actually produced per (prompt, seed): the paid calls;
    ``requested`` counts the POSTs that asked for them.
    ``latency`` adds a sleep per clip, to model a remote API in benchmarks.
    """

    def __init__(self, teacher: Teacher, workers: int = 4, max_jobs: int = 4096, latency: float = 0.0):
        if workers < 1 or max_jobs < 1 or latency < 0:
            raise ValueError(f"need workers >= 1, max_jobs >= 1, latency >= 0; got {workers}, {max_jobs}, {latency}")
        self.teacher, self.max_jobs, self.latency = teacher, max_jobs, latency
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="afd-teacher")
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.by_key: dict[str, str] = {}
        self.generated: Counter = Counter()
        self.requested: Counter = Counter()  # POSTs per (prompt, seed), replays included
        self.lock = threading.Lock()

    @property
    def paid(self) -> int:
        with self.lock:
            return sum(self.generated.values())

    def submit(self, prompt: str, seed: int, key: str | None = None) -> tuple[Job, bool]:
        """The job for this request: an existing one for a known idempotency key (created=False),
        else a new one queued for generation."""
        with self.lock:
            self.requested[(prompt, seed)] += 1
            if key is not None and key in self.by_key:
                job = self.jobs[self.by_key[key]]
                if (job.prompt, job.seed) != (prompt, seed):
                    raise RequestError(422, "idempotency_key_reused",
                                       f"Idempotency-Key {key[:64]!r} was already used for another request "
                                       f"(prompt {job.prompt!r}, seed {job.seed})")
                return job, False
            # Queued under the lock so a concurrent retry with the same key finds the real future.
            job = Job(secrets.token_hex(12), prompt, seed, key, self.executor.submit(self._generate, prompt, seed))
            self.jobs[job.id] = job
            if key is not None:
                self.by_key[key] = job.id
            self._evict()
        job.future.add_done_callback(lambda f, job=job: self._finished(job, f))
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def _generate(self, prompt: str, seed: int) -> EncodedClip:
        if self.latency:
            time.sleep(self.latency)
        videos = self.teacher.sample([prompt], [seed])
        if len(videos) != 1:
            raise RuntimeError(f"teacher {self.teacher.id!r} returned {len(videos)} clips for 1 request")
        clip = encode_clip(videos[0])
        with self.lock:
            self.generated[(prompt, seed)] += 1
        return clip

    def _finished(self, job: Job, f: Future) -> None:
        exc = None if f.cancelled() else f.exception()
        if f.cancelled() or (exc is not None and not _is_refusal(exc)):
            # Nothing was delivered, so a retry with the same key should generate afresh.
            with self.lock:
                if job.key is not None and self.by_key.get(job.key) == job.id:
                    del self.by_key[job.key]
        if exc is not None and not _is_refusal(exc):
            log.error("teacher failed on prompt %r seed %d: %s: %s", job.prompt, job.seed, type(exc).__name__, exc)

    def _evict(self) -> None:
        # Oldest finished jobs go first; unfinished ones are never dropped. Caller holds the lock.
        excess = len(self.jobs) - self.max_jobs
        if excess <= 0:
            return
        for jid in [j for j, job in self.jobs.items() if job.future.done()][:excess]:
            job = self.jobs.pop(jid)
            if job.key is not None and self.by_key.get(job.key) == jid:
                del self.by_key[job.key]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def parse_clip_request(body: bytes, max_prompt_chars: int) -> tuple[str, int]:
    """Validate a ``{"prompt": str, "seed": int}`` body; RequestError says what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, "body_too_large", f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON ({e}); "
                                                'expected {"prompt": str, "seed": int}') from None
    if not isinstance(obj, dict):
        raise RequestError(400, "invalid_body", f'request body must be a JSON object {{"prompt": str, "seed": int}}, '
                                                f"got a JSON {type(obj).__name__}")
    unknown = sorted(set(obj) - {"prompt", "seed"})
    if unknown:
        raise RequestError(422, "unknown_field",
                           f"unknown field(s) {', '.join(map(repr, unknown))}; expected 'prompt' and 'seed'")
    for name in ("prompt", "seed"):
        if name not in obj:
            raise RequestError(422, "missing_field",
                               f"missing field {name!r}; expected 'prompt' (string) and 'seed' (integer)")
    prompt, seed = obj["prompt"], obj["seed"]
    if not isinstance(prompt, str):
        raise RequestError(422, "invalid_prompt", f"field 'prompt' must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise RequestError(422, "invalid_prompt", "field 'prompt' must not be empty")
    if len(prompt) > max_prompt_chars:
        raise RequestError(422, "invalid_prompt",
                           f"field 'prompt' is {len(prompt)} characters; the limit is {max_prompt_chars}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RequestError(422, "invalid_seed", f"field 'seed' must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(422, "invalid_seed", f"field 'seed' must be in 0..2^63-1, got {seed}")
    return prompt, seed


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class _App(FastAPI):
    """FastAPI with an optional outermost ASGI layer (the fault injector), placed outside even
    Starlette's error middleware so it sees the server's own ``send`` and can cut connections."""

    outer = None

    def build_middleware_stack(self):
        stack = super().build_middleware_stack()
        return self.outer(stack) if self.outer is not None else stack


def create_app(teacher: Teacher, token_env: str | None = DEFAULT_TOKEN_ENV, faults=None, *,
               workers: int = 4, max_jobs: int = 4096, max_prompt_chars: int = 2000,
               latency: float = 0.0) -> FastAPI:
    """The HTTP app serving ``teacher`` (protocol in this module's docstring).

    ``token_env``: if that environment variable is set and non-empty now, ``/v1`` needs it as a
    bearer token. ``faults``: a ``FaultConfig`` to wrap the app in the fault injector (tests and
    benchmarks; loopback clients only). ``app.state.service`` is the ClipService (paid counts).
    """
    token = os.environ.get(token_env, "") if token_env else ""
    expected = f"Bearer {token}".encode() if token else None
    service = ClipService(teacher, workers=workers, max_jobs=max_jobs, latency=latency)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = _App(title="afd teacher", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service, app.state.teacher = service, teacher
    app.state.auth = expected is not None
    if faults is not None:
        from afd.teacher.faults import FaultInjector

        injector = {}

        def outer(inner):
            injector["i"] = FaultInjector(inner, faults)
            return injector["i"]

        app.outer = outer
        app.state.faults = injector

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    async def require_token(request: Request) -> None:
        if expected is None:
            return
        got = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(got, expected):
            what = "missing" if not got else "invalid"
            raise RequestError(401, "unauthorized", f"{what} bearer token: send 'Authorization: Bearer <token>' "
                                                    f"with the server's token")

    async def read_request(request: Request) -> tuple[str, int, str | None]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, "body_too_large",
                               f"request body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
        prompt, seed = parse_clip_request(await request.body(), max_prompt_chars)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise RequestError(422, "invalid_idempotency_key",
                               f"Idempotency-Key must be 1..255 characters, got {len(key)}")
        return prompt, seed, key

    def job_json(job: Job) -> dict:
        out = {"id": job.id, "status": job.status, "prompt": job.prompt, "seed": job.seed}
        if out["status"] == "succeeded":
            out["video_url"] = f"/v1/jobs/{job.id}/video"
        elif out["status"] == "failed":
            out["error"] = {"message": failure_message(job)}
        return out

    def failure_message(job: Job) -> str:
        exc = None if job.future.cancelled() else job.future.exception()
        if exc is not None and _is_refusal(exc):
            return f"the teacher refused prompt {job.prompt!r} seed {job.seed}: {exc}"
        return "the teacher failed (internal error, see the server log); retrying may succeed"

    async def video_response(job: Job) -> Response:
        try:
            # shield: a client hanging up must not cancel a generation other requests wait on.
            clip: EncodedClip = await asyncio.shield(asyncio.wrap_future(job.future))
        except Exception as exc:
            if _is_refusal(exc):
                raise RequestError(422, "teacher_refused", failure_message(job)) from None
            raise RequestError(500, "teacher_failed", failure_message(job)) from None
        headers = {**clip.headers, H_TEACHER: teacher.id, H_JOB: job.id, "Cache-Control": "no-store"}
        return Response(content=clip.data, media_type=clip.media_type, headers=headers)

    def find_job(job_id: str) -> Job:
        job = service.get(job_id)
        if job is None:
            raise RequestError(404, "unknown_job", f"unknown job {job_id[:80]!r}: never submitted here, or expired "
                                                   f"(the server keeps the last {service.max_jobs} jobs)")
        return job

    @app.get("/healthz")
    async def healthz():
        """Liveness, the teacher id and the number of clips generated so far."""
        return {"status": "ok", "teacher": teacher.id, "clips_generated": service.paid, "jobs": len(service.jobs)}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

    @v1.post("/videos")
    async def videos(request: Request):
        """Synchronous: generate (or replay, by Idempotency-Key) and return the clip."""
        prompt, seed, key = await read_request(request)
        job, _ = service.submit(prompt, seed, key)
        return await video_response(job)

    @v1.post("/jobs")
    async def submit_job(request: Request):
        """Job-based: queue a clip and return its job id at once."""
        prompt, seed, key = await read_request(request)
        job, created = service.submit(prompt, seed, key)
        return JSONResponse(job_json(job), status_code=202 if created else 200)

    @v1.get("/jobs/{job_id}")
    async def job_status(job_id: str):
        """A job's status, with its video_url once it succeeded."""
        return job_json(find_job(job_id))

    @v1.get("/jobs/{job_id}/video")
    async def job_video(job_id: str):
        """A finished job's clip; 409 while it is still queued or running."""
        job = find_job(job_id)
        if not job.future.done():
            raise RequestError(409, "job_not_finished", f"job {job.id} is {job.status}; poll GET /v1/jobs/{job.id} "
                                                        f"until its status is 'succeeded'")
        return await video_response(job)

    app.include_router(v1)
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0):
    """Run ``app`` with uvicorn in a background thread; yields its base URL, stops it on exit.

    ``port=0`` picks a free port (the socket is bound here, so there is no race).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=2, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="afd-uvicorn")
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within {start_timeout}s")
        time.sleep(0.01)
    bound = sock.getsockname()[1]
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
