"""The few multi-process primitives the trainer needs, with single-process fallbacks.

Runs under ``torchrun`` (``torch.distributed`` initialised by the caller or by ``init()`` from the
environment) or as one plain process; every function is the identity for one process, so the
loop has no ``if distributed`` branches. Gradients are averaged explicitly after ``backward``
(``average_gradients``) instead of through DDP: the student, the discriminator and the methods'
extra networks all train with the same call, and the order of collectives stays visible.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


_COMM = torch.device("cpu")  # where collectives' tensors live: the current GPU under nccl


def init(backend: str = "gloo") -> None:
    """Join the process group when launched by torchrun; no-op otherwise. ``backend``: gloo for
    CPU ranks, nccl for CUDA ranks (``afd.device.dist_backend``; the rank's GPU already set)."""
    global _COMM
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    if dist.is_initialized():
        _COMM = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


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
    """This rank's share of a global list: items r, r + n, r + 2n, ..."""
    r = rank() if r is None else r
    n = world_size() if n is None else n
    return items[r::n]


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


def mean_scalar(value: float) -> float:
    """The mean of a per-rank float over ranks (for logging)."""
    if world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_COMM)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world_size()
