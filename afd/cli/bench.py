"""``afd bench ...``: speed figures (printed, last line JSON). Not tests: tests check behaviour."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print figures; last line is JSON)")
    bs = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    q = bs.add_parser("world", help="render throughput of native world clips")
    q.add_argument("--clips", type=int, default=1000)
    q.add_argument("--chunk", type=int, default=125, help="clips rendered per vectorised call")
    q.add_argument("--mode", default="real", choices=("real", "loose"))
    q.set_defaults(func=_world)


def _world(args) -> int:
    from afd.bench.world import main

    return main(args)
