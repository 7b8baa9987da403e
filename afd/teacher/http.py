"""A teacher behind an HTTP API: slow, metered and sometimes failing.

``HTTPTeacher`` fetches clips over a bounded pool of concurrent requests and retries what is
worth retrying: connection errors, timeouts, 408/429/5xx (honouring Retry-After) and payloads
that do not validate, with exponential backoff and jitter, within a per-clip deadline. Other
4xx answers are final and raise a TeacherError naming the prompt and the server's message.
A clip counts as received only once it decodes and passes ``payload.decode_clip``.

Paying once per (prompt, seed): every POST carries an Idempotency-Key derived from (teacher
id, prompt, seed), so a retry after a lost answer (or a rerun after a kill) is matched to the
work already done by servers that honour it, as the afd server does. For job-based APIs each
job id is journaled (``jobs.JobJournal``) before it is polled, so a resumed run collects jobs it
already paid for. Under ``CachedTeacher`` the journal lives in the cache directory and each clip
is stored the moment it validates.

Before its first request the client probes the base URL once: a URL where nothing listens fails
at once with one line, instead of after the whole retry budget; after a successful probe,
transient faults keep that budget, and every retry is reported on stderr. Credentials in the URL
(``user:key@``, ``?api_key=``) are redacted wherever it is shown and left out of the default
cache identity (``afd.teacher.urls``).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

import httpx
from tqdm import tqdm

from afd.teacher.api import DEFAULT_TOKEN_ENV, APISpec, FieldMissing, get_field, get_spec
from afd.teacher.base import Teacher, TeacherError, check_request
from afd.teacher.cache import clip_key
from afd.teacher.jobs import JobJournal
from afd.teacher.payload import ClipLimits, PayloadError, decode_clip
from afd.teacher.urls import credential_free_url, redact_text, redact_url
from afd.video.core import Video

log = logging.getLogger("afd.teacher.http")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Transient(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _JobGone(Exception):
    """The server no longer knows a job (404 while polling)."""


@dataclass
class _Reply:
    status: int
    headers: httpx.Headers
    content: bytes

    def is_json(self) -> bool:
        return "json" in self.headers.get("content-type", "").lower()


@dataclass
class _Clip:
    prompt: str
    seed: int
    key: str
    deadline: float  # time.monotonic() by which this clip must be in hand

    def __str__(self) -> str:
        return f"prompt {self.prompt!r} seed {self.seed}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def _server_message(reply: _Reply) -> str:
    """The server's own words for an error, from common JSON shapes or the text body."""
    try:
        text = reply.content[:4000].decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(reply.content)} bytes of binary data, {reply.headers.get('content-type', 'no content type')})"
    try:
        obj = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or "(empty body)"
    for path in ("error.message", "error", "detail", "message"):
        try:
            msg = get_field(obj, path)
        except FieldMissing:
            continue
        if isinstance(msg, (str, int, float)):
            return str(msg)[:300]
        return json.dumps(msg)[:300]
    return json.dumps(obj)[:300]


def _json_body(reply: _Reply, what: str):
    try:
        return json.loads(reply.content)
    except ValueError:
        # A garbled answer (a proxy's HTML page, a cut body) is worth asking again.
        raise _Transient(f"{what} answer is not JSON: {_server_message(reply)[:120]}") from None


class HTTPTeacher(Teacher):
    """A teacher reached over HTTP(S) at ``url``.

    ``api``: an ``APISpec``, a preset name (``afd-sync``, ``afd-jobs``) or a dict of its fields.
    ``id``: the cache identity (default: the URL without its credentials); set it if the same
    model moves URL.
    ``concurrency``: requests (or jobs) in flight at once. ``connect_timeout``/``read_timeout``:
    per request, seconds. ``retries``: extra attempts per step after a transient failure, with
    backoff ``backoff * 2**n`` (capped at ``max_backoff``, jittered). ``deadline``: seconds per
    clip for everything, retries and polling included. ``token_env``: environment variable whose
    value, if set, is sent as the bearer token (read per request, never logged). ``journal``: job
    journal path (default: the directory a ``CachedTeacher`` binds, else memory only).
    """

    def __init__(self, url: str, *, api: APISpec | str | dict | None = None, id: str | None = None,
                 concurrency: int = 4, connect_timeout: float = 10.0, read_timeout: float = 120.0,
                 retries: int = 8, backoff: float = 0.5, max_backoff: float = 30.0, deadline: float = 1800.0,
                 token_env: str | None = DEFAULT_TOKEN_ENV, journal: str | os.PathLike | None = None,
                 max_bytes: int = ClipLimits.max_bytes, max_frames: int = ClipLimits.max_frames,
                 transport: httpx.BaseTransport | None = None):
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            shown = redact_url(url) if isinstance(url, str) else url
            raise ValueError(f"teacher URL must look like http://HOST[:PORT][/PATH] or https://..., got {shown!r}")
        for name, v, lo in (("concurrency", concurrency, 1), ("retries", retries, 0), ("max_bytes", max_bytes, 1),
                            ("max_frames", max_frames, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"HTTPTeacher {name} must be an integer >= {lo}, got {v!r}")
        for name, v in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout), ("backoff", backoff),
                        ("max_backoff", max_backoff), ("deadline", deadline)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"HTTPTeacher {name} must be a number > 0 (seconds), got {v!r}")
        self.url = url.rstrip("/")  # as given, credentials included: only requests use it
        # A query on the base URL (``?api_key=...``) is sent as parameters of every request to the
        # API's own origin; joined onto the base as text, request paths would land inside it.
        parts = urlsplit(self.url)
        self._base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
        self._base_params = parse_qsl(parts.query, keep_blank_values=True)
        self.shown_url = redact_url(self.url)
        self.api = get_spec(api)
        self._id = id or credential_free_url(self.url)
        self.concurrency, self.retries, self.deadline = concurrency, retries, float(deadline)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.token_env = token_env
        self.limits = ClipLimits(max_bytes=max_bytes, max_frames=max_frames)
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                      pool=deadline)
        self._transport = transport
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._journal_path = Path(journal) if journal is not None else None
        self._journal: JobJournal | None = None
        self._rng = random.Random()
        self._reachable = False  # set by the first successful probe
        self._stats_lock = threading.Lock()
        self.stats: Counter = Counter()  # requests, retries, jobs_submitted, jobs_resumed, clips

    @classmethod
    def from_config(cls, path: str | os.PathLike) -> "HTTPTeacher":
        """Build from a YAML/JSON API file: ``url``, any constructor keyword and any ``APISpec``
        field (or ``preset``) at the top level (``afd.teacher.api_file``)."""
        from afd.teacher.api_file import read_api_file

        url, api, kwargs = read_api_file(path)
        try:
            return cls(url, api=api, **kwargs)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @property
    def id(self) -> str:
        return self._id

    def bind_state_dir(self, directory: Path) -> None:
        if self._journal_path is None:
            self._journal_path = Path(directory) / "jobs.jsonl"
            self._journal = None

    @property
    def journal(self) -> JobJournal:
        if self._journal is None:
            self._journal = JobJournal(self._journal_path)
        return self._journal

    def close(self) -> None:
        """Close the connection pool (a later request opens a new one)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __repr__(self) -> str:
        return f"HTTPTeacher({self.shown_url!r}, mode={self.api.mode!r}, concurrency={self.concurrency})"

    # -- the Teacher interface ------------------------------------------------------------------

    def sample(self, prompts: list[str], seeds: list[int]) -> list[Video]:
        out: list[Video | None] = [None] * len(prompts)
        for i, v in self.sample_iter(prompts, seeds):
            out[i] = v
        return out  # type: ignore[return-value]

    def sample_iter(self, prompts: list[str], seeds: list[int]):
        """Yields ``(index, clip)`` as clips validate. A clip that fails for good does not stop
        the others: they are all yielded (and so stored by a cache) before the error is raised."""
        check_request(prompts, seeds)
        wanted: dict[tuple[str, int], list[int]] = {}
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            wanted.setdefault((p, s), []).append(i)
        if not wanted:
            return
        self._probe()
        if self.api.mode == "jobs":
            self.journal.reload()
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(wanted)), thread_name_prefix="afd-http")
        try:
            futures = {pool.submit(self._fetch, p, s, cancel): (p, s) for p, s in wanted}
            errors: list[BaseException] = []
            for fut in as_completed(futures):
                try:
                    video = fut.result()
                except Exception as e:  # noqa: BLE001 - reported after the good clips are out
                    errors.append(e)
                    continue
                for i in wanted[futures[fut]]:
                    yield i, video
            if errors:
                if len(errors) == 1:
                    raise errors[0]
                bad = [e for e in errors if not isinstance(e, TeacherError)]
                if bad:
                    raise bad[0]
                shown = "; ".join(str(e) for e in errors[:3])
                raise TeacherError(f"{len(errors)} of {len(wanted)} clips failed: {shown}"
                                   + ("; ..." if len(errors) > 3 else ""))
        finally:
            # Stop waiting workers promptly if the consumer stops early (error, interrupt).
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one clip ---------------------------------------------------------------------------------

    def _fetch(self, prompt: str, seed: int, cancel: threading.Event) -> Video:
        clip = _Clip(prompt, seed, clip_key(self.id, prompt, seed), time.monotonic() + self.deadline)
        video = self._fetch_job(clip, cancel) if self.api.mode == "jobs" else self._fetch_sync(clip, cancel)
        self._count("clips")
        return video

    def _fetch_sync(self, clip: _Clip, cancel) -> Video:
        api = self.api

        def request():
            reply = self._send(clip, api.submit_method, api.submit_path, "request",
                               body=api.request_body(clip.prompt, clip.seed), idempotent=True)
            if reply.is_json():
                return self._field(clip, _json_body(reply, "request"), api.video_url_field, "video_url_field",
                                   "request")
            return self._validate(clip, reply)

        got = self._retry(clip, "request", request, cancel)
        if isinstance(got, Video):
            return got
        return self._retry(clip, "download", lambda: self._download(clip, str(got)), cancel)

    def _fetch_job(self, clip: _Clip, cancel) -> Video:
        journal = self.journal
        job_id = journal.job_id(clip.key)
        resumed = job_id is not None
        if resumed:
            self._count("jobs_resumed")
            log.info("%s: collecting journaled job %s instead of submitting again", clip, job_id)
        else:
            job_id = self._submit_job(clip, cancel)
        while True:
            try:
                url = self._await_job(clip, job_id, cancel)
                break
            except _JobGone:
                if not resumed:
                    raise TeacherError(f"teacher {self.shown_url}: {clip}: job {job_id} disappeared from the server "
                                       f"while being polled (HTTP 404)") from None
                log.warning("%s: journaled job %s is unknown to the server (expired?); submitting again",
                            clip, job_id)
                resumed = False
                job_id = self._submit_job(clip, cancel)
        video = self._retry(clip, "download", lambda: self._download(clip, url), cancel)
        journal.record(clip.key, clip.prompt, clip.seed, job_id, "collected")
        return video

    def _submit_job(self, clip: _Clip, cancel) -> str:
        api = self.api

        def submit():
            reply = self._send(clip, api.submit_method, api.submit_path, "job submission",
                               body=api.request_body(clip.prompt, clip.seed), idempotent=True)
            job_id = self._field(clip, _json_body(reply, "job submission"), api.job_id_field, "job_id_field",
                                 "job submission")
            if not isinstance(job_id, (str, int)) or isinstance(job_id, bool) or not str(job_id):
                raise TeacherError(f"teacher {self.shown_url}: {clip}: job id at {api.job_id_field!r} is {job_id!r}, "
                                   f"not a string")
            return str(job_id)

        job_id = self._retry(clip, "job submission", submit, cancel)
        # On disk before the first poll: from here on a killed run can collect instead of paying again.
        self.journal.record(clip.key, clip.prompt, clip.seed, job_id, "submitted")
        self._count("jobs_submitted")
        return job_id

    def _await_job(self, clip: _Clip, job_id: str, cancel) -> str:
        """Poll until the job is done; returns its video URL."""
        api = self.api

        def poll():
            reply = self._send(clip, "GET", api.status_url(job_id), "job status", gone_ok=True)
            return None if reply.status == 404 else _json_body(reply, "job status")

        while True:
            obj = self._retry(clip, "job status", poll, cancel)
            if obj is None:
                raise _JobGone(job_id)
            status = str(self._field(clip, obj, api.status_field, "status_field", "job status")).lower()
            if status in api.done_values:
                return str(self._field(clip, obj, api.video_url_field, "video_url_field", "job status"))
            if status in api.failed_values:
                try:
                    reason = get_field(obj, api.error_field)
                except FieldMissing:
                    reason = "(no error message at error_field " + repr(api.error_field) + ")"
                self.journal.record(clip.key, clip.prompt, clip.seed, job_id, "failed")
                raise TeacherError(f"teacher {self.shown_url}: {clip}: job {job_id} ended {status!r}: {reason}")
            if time.monotonic() + api.poll_interval > clip.deadline:
                raise TeacherError(
                    f"teacher {self.shown_url}: {clip}: job {job_id} still {status!r} after the {self.deadline:g} s "
                    f"deadline; it stays in the job journal and a later run will collect it")
            self._wait(api.poll_interval, cancel)

    def _download(self, clip: _Clip, url: str) -> Video:
        reply = self._send(clip, "GET", url, "download")
        if reply.is_json():
            raise _Transient(f"download returned JSON instead of a clip: {_server_message(reply)}")
        return self._validate(clip, reply)

    def _validate(self, clip: _Clip, reply: _Reply) -> Video:
        try:
            return decode_clip(reply.content, reply.headers, self.limits)
        except PayloadError as e:
            raise _Transient(f"invalid clip: {e}") from None

    def _field(self, clip: _Clip, obj, path: str, key: str, what: str):
        """``obj`` at ``path``; a missing field is a configuration problem, so final."""
        try:
            return get_field(obj, path)
        except FieldMissing as e:
            raise TeacherError(f"teacher {self.shown_url}: {clip}: the {what} answer has no {path!r} ({e}); "
                               f"check the API config key {key!r}") from None

    # -- HTTP and retries -----------------------------------------------------------------------

    def _probe(self) -> None:
        """Once, before the first request: is anything answering at the base URL? Any HTTP
        answer counts, error statuses included (what they mean is for the real requests and
        their retries); a refused, unresolvable or unanswered connection is final."""
        if self._reachable:
            return
        self._count("probes")
        try:
            # One short try that nothing could bill: a HEAD of the base URL, no token, no body.
            with self._http().stream("HEAD", "", params=self._base_params or None,
                                     timeout=httpx.Timeout(self._timeout.connect)):
                pass
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, httpx.UnsupportedProtocol,
                httpx.InvalidURL) as e:
            raise TeacherError(f"teacher {self.shown_url}: nothing answers there ({type(e).__name__}: "
                               f"{redact_text(str(e)) or 'no detail'}); check the URL and that the server is "
                               f"running (nothing was requested or paid)") from None
        except httpx.TransportError:
            pass  # connected, then slow or odd: something listens, and requests retry what follows
        self._reachable = True

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self._base, timeout=self._timeout, transport=self._transport, follow_redirects=True,
                    limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
                    headers={"User-Agent": "afd-teacher-client"},
                )
            return self._client

    def _headers(self, clip: _Clip, url: str, idempotent: bool) -> dict:
        headers = dict(self.api.headers)
        # Credentials go only to the API's own origin, never to a storage host it links to.
        if self._same_origin(url):
            token = os.environ.get(self.token_env, "") if self.token_env else ""
            if token:
                scheme = self.api.auth_scheme
                headers[self.api.auth_header] = f"{scheme} {token}" if scheme else token
        if idempotent and self.api.idempotency_header:
            headers[self.api.idempotency_header] = clip.key
        return headers

    def _same_origin(self, url: str) -> bool:
        target, base = urlsplit(urljoin(self._base + "/", url)), urlsplit(self._base)
        return (target.scheme, target.netloc) == (base.scheme, base.netloc)

    def _send(self, clip: _Clip, method: str, url: str, what: str, body=None, idempotent: bool = False,
              gone_ok: bool = False) -> _Reply:
        """One HTTP exchange. Returns 2xx replies (and 404 when ``gone_ok``); raises _Transient
        for what may succeed later and TeacherError for a final refusal."""
        self._count("requests")
        try:
            params = self._base_params if self._base_params and self._same_origin(url) else None
            with self._http().stream(method, url, json=body, params=params,
                                     headers=self._headers(clip, url, idempotent)) as r:
                content = bytearray()
                for chunk in r.iter_bytes():
                    content += chunk
                    if len(content) > self.limits.max_bytes:
                        raise _Transient(f"{what} answer is larger than max_bytes={self.limits.max_bytes}")
                reply = _Reply(r.status_code, r.headers, bytes(content))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as e:
            raise TeacherError(f"teacher {self.shown_url}: {clip}: cannot send the {what} to {redact_url(url)!r}: "
                               f"{redact_text(str(e))}") from None
        except httpx.TimeoutException as e:
            raise _Transient(f"{what} timed out ({type(e).__name__})") from None
        except (httpx.TransportError, httpx.DecodingError) as e:
            raise _Transient(f"{what} failed: {type(e).__name__}: {redact_text(str(e))}") from None
        except httpx.TooManyRedirects as e:
            raise TeacherError(f"teacher {self.shown_url}: {clip}: {what}: {redact_text(str(e))}") from None
        if 200 <= reply.status < 300 or (gone_ok and reply.status == 404):
            return reply
        message = _server_message(reply)
        if reply.status in RETRY_STATUS or reply.status >= 500:
            raise _Transient(f"{what}: HTTP {reply.status}: {message}",
                             retry_after=parse_retry_after(reply.headers.get("retry-after")))
        hint = ""
        if reply.status in (401, 403):
            hint = (f" (the token comes from the environment variable {self.token_env}, which is "
                    f"{'set' if self.token_env and os.environ.get(self.token_env) else 'not set'})")
        raise TeacherError(f"teacher {self.shown_url}: {clip}: the server refused the {what} "
                           f"(HTTP {reply.status}): {message}{hint}")

    def _retry(self, clip: _Clip, what: str, fn, cancel: threading.Event):
        """``fn()`` until it returns, retrying _Transient failures with backoff within the
        retry count and the clip's deadline."""
        attempt = 0
        while True:
            if cancel.is_set():
                raise TeacherError(f"teacher {self.shown_url}: {clip}: cancelled")
            try:
                return fn()
            except _Transient as e:
                attempt += 1
                if attempt > self.retries:
                    raise TeacherError(f"teacher {self.shown_url}: {clip}: {what} failed {attempt} times, giving up; "
                                       f"last error: {e}") from None
                step = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay = step / 2 + self._rng.uniform(0, step / 2)  # jitter spreads synchronized retries
                if e.retry_after is not None:
                    delay = max(delay, e.retry_after)
                if time.monotonic() + delay > clip.deadline:
                    raise TeacherError(f"teacher {self.shown_url}: {clip}: {what} still failing at the "
                                       f"{self.deadline:g} s deadline after {attempt} attempts; "
                                       f"last error: {e}") from None
                self._count("retries")
                # On stderr, not only in the log: a user watching a stalled run must see why.
                line = (f"teacher {self.shown_url}: {clip}: {what} attempt {attempt} failed ({e}); retrying in "
                        f"{delay:.1f} s ({attempt} of {self.retries} retries used)")
                log.debug(line)
                tqdm.write(f"afd: {line}", file=sys.stderr)
                self._wait(delay, cancel)

    def _wait(self, seconds: float, cancel: threading.Event) -> None:
        cancel.wait(seconds)

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1
