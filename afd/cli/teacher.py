"""``afd teacher ...``: serve any teacher over HTTP, and fetch one clip from any teacher spec."""

from __future__ import annotations

import socket
import sys

from afd.cli import examples
from afd.teacher.api import DEFAULT_TOKEN_ENV

DEFAULT_PORT = 8000


def register(sub) -> None:
    p = sub.add_parser("teacher", help="teachers over HTTP: serve one, or fetch a clip from one",
                       epilog=examples("afd teacher serve --teacher world --port 8000",
                                       "afd teacher sample --teacher http://127.0.0.1:8000 "
                                       "--prompt 'a red ball falls' --out clip.mp4",
                                       "afd teacher sample --teacher api:teacher_api.yaml --prompt 'a red ball falls' "
                                       "--out clip.mp4 --cache cache/teacher"))
    ts = p.add_subparsers(dest="teacher_command", required=True, metavar="TEACHER_COMMAND")

    q = ts.add_parser("serve", help="serve a teacher over HTTP (POST /v1/videos, POST /v1/jobs, GET /healthz)")
    q.add_argument("--teacher", default="world", help="teacher spec: world[:real|loose] or folder:DIR")
    q.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    q.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 picks a free one)")
    q.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR",
                   help="require the bearer token held in this environment variable, if it is set")
    q.add_argument("--workers", type=int, default=4, help="clips generated in parallel")
    q.add_argument("--max-jobs", type=int, default=4096, help="finished jobs kept for polling and replay")
    q.add_argument("--max-prompt-chars", type=int, default=2000, help="longest prompt accepted")
    g = q.add_argument_group("testing and benchmarks (loopback only)")
    g.add_argument("--latency", type=float, default=0.0, help="extra seconds per clip, to model a remote API")
    g.add_argument("--fault-rate", type=float, default=0.0,
                   help="fraction of /v1 requests answered with an injected fault (500/503/429, delay, drop, "
                        "truncated or wrong body)")
    g.add_argument("--fault-delay", type=float, default=2.0, help="seconds a 'delay' fault holds the answer")
    g.add_argument("--fault-seed", type=int, default=0, help="seed of the injected faults' draws")
    q.set_defaults(func=cmd_serve)

    q = ts.add_parser("sample", help="fetch one clip from any teacher spec (e.g. to check an API config)")
    q.add_argument("--teacher", required=True, help="world, folder:DIR, http(s)://HOST:PORT or api:FILE.yaml")
    q.add_argument("--prompt", required=True, help="the prompt, any text the teacher accepts")
    q.add_argument("--seed", type=int, default=0, help="the clip's seed")
    q.add_argument("--out", required=True, help="output file (.mp4, .gif, .npz)")
    q.add_argument("--cache", help="cache directory: a clip already there is not paid for again")
    q.set_defaults(func=cmd_sample)


def cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    for name in ("workers", "max_jobs", "max_prompt_chars"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    import uvicorn

    from afd.teacher import make_teacher
    from afd.teacher.faults import FaultConfig
    from afd.teacher.server import create_app, is_loopback

    faults = None
    if args.fault_rate:
        if not is_loopback(args.host):
            raise ValueError(f"--fault-rate is for loopback testing only; "
                             f"--host {args.host!r} is not a loopback address")
        faults = FaultConfig(rate=args.fault_rate, delay=args.fault_delay, seed=args.fault_seed)
    teacher = make_teacher(args.teacher)
    app = create_app(teacher, token_env=args.token_env or None, faults=faults, workers=args.workers,
                     max_jobs=args.max_jobs, max_prompt_chars=args.max_prompt_chars, latency=args.latency)
    if not app.state.auth and not is_loopback(args.host):
        print(f"afd teacher serve: warning: serving on {args.host} without a token; set {args.token_env} "
              f"to require one", file=sys.stderr)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    auth = f"bearer token from ${args.token_env}" if app.state.auth else "none"
    extra = f", faults {args.fault_rate:g}" if faults else ""
    print(f"afd teacher: serving {teacher.id} at http://{host}:{port} "
          f"(POST /v1/videos, POST /v1/jobs, GET /healthz; auth: {auth}{extra})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="on", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0


def cmd_sample(args) -> int:
    from afd.teacher import CachedTeacher, make_teacher
    from afd.video.io import write_video

    teacher = make_teacher(args.teacher)
    if args.cache:
        teacher = CachedTeacher(teacher, args.cache)
    video = teacher.sample([args.prompt], [args.seed])[0]
    path = write_video(args.out, video)
    T, _, H, W = video.frames.shape
    print(f"wrote {path} ({T} frames, {H}x{W}, {video.fps:g} fps) from {teacher.id}")
    return 0
