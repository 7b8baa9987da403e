"""The few multi-process primitives the trainer needs, with single-process fallbacks.

Runs under ``torchrun`` (``torch.distributed`` initialised by the caller or by ``init()`` from the
environment) or as one plain process; every function is the identity for one process, so the
loop has no ``if distributed`` branches. In ``afd train`` the student's gradients are shared
by an engine (DDP or FSDP2, ``afd.train.parallel``); the small networks (the discriminator, DMD's
critic) average theirs explicitly after ``backward`` (``average_gradients``). ``afd pretrain``
runs as one process.

Ranks hold contiguous shares of the global batch (``shard``), and every per-row random draw is
made for the global batch on every rank, each keeping its own rows (``rank_rows``). So a run on
W ranks draws the same numbers for each clip as one process with the same global batch, and
their updates agree up to float summation order (tests/test_parallel.py).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

_COMM = torch.device("cpu")  # where collectives' tensors live: the current GPU under nccl


def init(backend: str = "gloo") -> None:
    """Join the process group when launched by torchrun; no-op otherwise. ``backend``: gloo for
    CPU ranks, nccl for CUDA ranks (``afd.device.dist_backend``; the rank's GPU already set)."""
    global _COMM
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        # Other ranks wait at a barrier while rank 0 alone prefetches the teacher's clips or runs
        # the base and final evals, which can take far longer than the default 10 minutes.
        minutes = int(os.environ.get("AFD_DIST_TIMEOUT_MIN", "240"))
        dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    if dist.is_initialized():
        _COMM = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
                 else torch.device("cpu"))


def shutdown() -> None:
    """Leave the process group once every rank is done (no-op for one process). Without it a rank
    may exit while gloo's threads still run, and abort ("terminate called without an active
    exception") after its work has finished."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shard(items: list, r: int | None = None, n: int | None = None) -> list:
    """This rank's contiguous share of a global list whose length n divides: items
    r * k .. r * k + k - 1 for k = len(items) / n (so ``gather_cat`` restores the global order)."""
    r = rank() if r is None else r
    n = world_size() if n is None else n
    if len(items) % n:
        raise ValueError(f"{len(items)} items cannot be split evenly over {n} ranks")
    k = len(items) // n
    return items[r * k:(r + 1) * k]


def rank_rows(draw, n_local: int) -> torch.Tensor:
    """This rank's ``n_local`` rows of a random draw made for the whole global batch.

    ``draw(n)`` returns a tensor with n rows along dim 0 from a generator seeded alike on every
    rank; each rank draws ``n_local * world_size()`` rows and keeps its contiguous share (the
    layout of ``shard``). One process: exactly ``draw(n_local)``. No collective is involved."""
    W = world_size()
    if W == 1:
        return draw(n_local)
    r = rank()
    return draw(n_local * W)[r * n_local:(r + 1) * n_local]


def broadcast_ints(values: list[int]) -> list[int]:
    """Rank 0's list of ints on every rank (the same length on every rank), for random choices
    that all ranks must share, e.g. the gradient-carrying step of each block (GAN, DMD)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.long, device=_COMM)
    dist.broadcast(t, src=0)
    return [int(v) for v in t.tolist()]


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a (N_local, ...) tensor over ranks along dim 0 (ranks may hold different N)."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=_COMM)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    padded = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=_COMM)
    padded[: x.shape[0]] = x.to(_COMM)
    out = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)]).to(x.device)


def average_gradients(params) -> None:
    """Average .grad over ranks (parameters without a gradient count as zero)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank calls it)."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_COMM)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_scalar(value: float) -> float:
    """The mean of a per-rank float over ranks (for logging)."""
    if world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_COMM)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world_size()


def is_sharded(x: torch.Tensor) -> bool:
    """Whether ``x`` is an FSDP2-sharded ``DTensor``."""
    from torch.distributed.tensor import DTensor

    return isinstance(x, DTensor)


def gathered(x: torch.Tensor) -> torch.Tensor:
    """The full tensor of an FSDP2-sharded ``DTensor`` (a collective: every rank calls it), or ``x``."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def match_layout(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``like``: this rank's shard of it when ``like`` is a sharded ``DTensor``
    (every rank calls it with the same ``full``), else ``full`` unchanged."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full.to(device=like.device, dtype=like.dtype), like.device_mesh, like.placements)
