"""A fault layer for the teacher server, for tests and benchmarks on loopback only.

It sits outermost around the app and, for a fraction of ``/v1/`` requests, misbehaves the way
metered APIs and the networks in front of them do. Most faults let the app do the work first
(the clip is generated, i.e. paid for) and then lose the answer, because that is the case a
client must handle without paying twice.

Kinds: ``500``/``503`` (half of them after the work), ``429`` (with Retry-After, before the
work), ``delay`` (answer held for ``delay`` s, past the client's read timeout), ``drop``
(connection cut with no response), ``truncate`` (body cut short: either the connection closes
early or Content-Length is rewritten so the short body looks complete) and ``wrong`` (200 with
an HTML page or random bytes instead of the answer).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass

KINDS = ("500", "503", "429", "delay", "drop", "truncate", "wrong")


@dataclass(frozen=True)
class FaultConfig:
    """``rate``: fraction of ``/v1/`` requests that get a fault, of a kind drawn from ``kinds``."""

    rate: float = 0.2
    kinds: tuple[str, ...] = KINDS
    delay: float = 2.0
    retry_after: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], got {self.rate}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown fault kind(s) {bad}; choose from {', '.join(KINDS)}")
        if self.delay < 0 or self.retry_after < 0:
            raise ValueError(f"delay and retry_after must be >= 0, got {self.delay}, {self.retry_after}")


def _loopback_client(scope) -> bool:
    client = scope.get("client")
    host = client[0] if client else ""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


class FaultInjector:
    """ASGI middleware injecting ``config`` faults; ``injected`` counts them by kind. Requests
    from non-loopback clients always pass through untouched."""

    def __init__(self, app, config: FaultConfig):
        self.app, self.config = app, config
        self.rng = random.Random(config.seed)  # the event loop is one thread: no lock needed
        self.injected: Counter = Counter()

    async def __call__(self, scope, receive, send):
        cfg = self.config
        if (scope["type"] != "http" or not scope["path"].startswith("/v1/") or not _loopback_client(scope)
                or self.rng.random() >= cfg.rate):
            return await self.app(scope, receive, send)
        kind = self.rng.choice(cfg.kinds)
        self.injected[kind] += 1
        if kind in ("500", "503", "429"):
            if kind != "429" and self.rng.random() < 0.5:
                await self._run(scope, receive)  # the work is done (paid), then the gateway fails
            headers = [(b"retry-after", f"{cfg.retry_after:g}".encode())] if kind in ("429", "503") else []
            return await _reply(send, int(kind), b"application/json",
                                json.dumps({"error": {"code": "injected",
                                                      "message": f"injected fault {kind}"}}).encode(),
                                headers)
        start, body = await self._run(scope, receive)
        if kind == "delay":
            await asyncio.sleep(cfg.delay)
            await send(start)
            await send({"type": "http.response.body", "body": body})
        elif kind == "drop":
            if not await _abort(send):
                await send(start)  # no transport to cut: a response that never completes
        elif kind == "truncate":
            half = body[: len(body) // 2]
            if self.rng.random() < 0.5:
                await send(start)
                await send({"type": "http.response.body", "body": half, "more_body": True})
                if not await _abort(send):
                    return
            else:
                await send(dict(start, headers=_with_length(start["headers"], len(half))))
                await send({"type": "http.response.body", "body": half})
        else:  # wrong
            variant = self.rng.randrange(3)
            if variant == 0:
                await _reply(send, 200, b"text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")
            else:
                junk = self.rng.randbytes(max(16, len(body)))
                # variant 1 keeps the X-AFD-* headers (their digest no longer matches); 2 drops them
                headers = start["headers"] if variant == 1 else [(b"content-type", b"application/octet-stream")]
                await send({"type": "http.response.start", "status": 200, "headers": _with_length(headers, len(junk))})
                await send({"type": "http.response.body", "body": junk})

    async def _run(self, scope, receive) -> tuple[dict, bytes]:
        """Run the app to completion, capturing its response instead of sending it."""
        start, chunks = None, []

        async def capture(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if start is None:
            start = {"type": "http.response.start", "status": 500, "headers": []}
        return start, b"".join(chunks)


def _with_length(headers, n: int) -> list:
    return [(k, v) for k, v in headers if k.lower() != b"content-length"] + [(b"content-length", str(n).encode())]


async def _reply(send, status: int, content_type: bytes, body: bytes, headers=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _abort(send) -> bool:
    """Cut the TCP connection under this request (uvicorn's ``send`` is bound to a protocol cycle
    holding the transport). Returns False where that is not reachable."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    for _ in range(3):  # let the server see the connection is gone before the app returns
        await asyncio.sleep(0)
    return True
