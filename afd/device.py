"""The device a run uses, and what follows from it: autocast and the process-group backend.

``device`` in a config is ``auto`` (the first CUDA GPU when one is usable, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. Everything numeric in afd follows the device of the model it runs:
``autocast`` reads it from a module or tensor, so one code path serves CPU and CUDA. Random draws
stay on CPU generators (afd.train.plan) and move to the device afterwards, so a seed gives the same
noise on every device.
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device_spec(spec: str) -> str:
    """``spec`` if it is a valid device setting, else a ValueError naming the choices."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch.device for a device setting; a ValueError in one line when it is absent here."""
    import torch  # here, not at import: reading a config must not load torch

    check_device_spec(spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec == "auto" and torch.cuda.is_available():
        spec = "cuda"
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device={spec} was requested but {why} (torch {torch.__version__}); "
                         "use device=cpu or device=auto")
    if spec == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        spec = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # torchrun: one GPU per local rank
    device = torch.device(spec)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={spec} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    torch.cuda.set_device(device)  # collectives (nccl) and bare .cuda() calls use this rank's GPU
    return device


def device_of(x) -> torch.device:
    """The device of a tensor, a module (its first parameter or buffer; CPU if it has none) or a device."""
    import torch

    if isinstance(x, torch.device):
        return x
    if isinstance(x, torch.Tensor):
        return x.device
    for t in (*x.parameters(), *x.buffers()):
        return t.device
    return torch.device("cpu")


def autocast(where, enabled: bool = True):
    """bf16 autocast on the device of ``where`` (a module, tensor or device), or a no-op context.

    bf16 on both CPU (AMX makes it ~4x faster than fp32 here) and CUDA; losses and optimizer
    states stay fp32 outside it."""
    import torch

    if not enabled:
        return nullcontext()
    return torch.autocast(device_of(where).type, dtype=torch.bfloat16)


def dist_backend(device: torch.device) -> str:
    """The process-group backend for ranks on ``device``: nccl on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"
