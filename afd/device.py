"""The device a run uses, and what follows from it: autocast and the process-group backend.

``device`` in a config is ``auto`` (the first CUDA GPU when one is usable, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. Everything numeric in afd follows the device of the model it runs:
``autocast`` reads it from a module or tensor, so one code path serves CPU and CUDA. Random draws
stay on CPU generators (afd.train.plan) and move to the device afterwards, so a seed gives the same
noise on every device.
"""

from __future__ import annotations

import functools
import os
import re
from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal, Union

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


AmpSetting = Union[bool, Literal["auto"]]  # a config's ``amp``: true, false or "auto"


@functools.cache  # read once: autocast asks on every forward
def cpu_bf16_features() -> tuple[str, ...]:
    """The CPU features that compute bf16 matmuls natively (AMX, AVX512-BF16) this CPU reports
    (Linux /proc/cpuinfo flags; elsewhere none are known). Without them oneDNN emulates bf16,
    which is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(name for name in ("amx_bf16", "avx512_bf16") if name in flags)


def bf16_native(device) -> bool:
    """Whether ``device`` (a module, tensor or device) computes bf16 natively: a CUDA GPU with bf16,
    or a CPU with AMX or AVX512-BF16."""
    import torch

    dev = device_of(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return dev.type == "cpu" and bool(cpu_bf16_features())


def resolve_amp(amp: AmpSetting, where) -> bool:
    """Whether a run with setting ``amp`` uses bf16 autocast on the device of ``where``: true and
    false as they say; "auto" only where bf16 is native (``bf16_native``), fp32 elsewhere."""
    if amp == "auto":
        return bf16_native(where)
    if not isinstance(amp, bool):
        raise ValueError(f"amp must be true, false or auto, got {amp!r}")
    return amp


def describe_precision(amp: AmpSetting, where) -> str:
    """One line for a run's log: the precision it computes in and why."""
    dev = device_of(where)
    on = resolve_amp(amp, dev)
    what = "bf16 autocast" if on else "fp32"
    if amp != "auto":
        return f"{what} (amp={str(amp).lower()})"
    if dev.type == "cpu":
        feats = cpu_bf16_features()
        why = f"this CPU has {', '.join(feats)}" if feats else "this CPU has no AMX or AVX512-BF16, so bf16 is emulated"
    else:
        why = f"{dev.type} {'supports' if on else 'lacks'} bf16"
    return f"{what} (amp=auto: {why})"


def autocast(where, enabled: AmpSetting = True):
    """bf16 autocast on the device of ``where`` (a module, tensor or device), or a no-op context.

    ``enabled`` is a config's ``amp`` (``resolve_amp``): "auto" autocasts only where bf16 is
    native, since emulated bf16 (a CPU without AMX or AVX512-BF16) is slower than fp32. Losses and
    optimizer states stay fp32 outside it."""
    import torch

    if not resolve_amp(enabled, where):
        return nullcontext()
    return torch.autocast(device_of(where).type, dtype=torch.bfloat16)


def dist_backend(device: torch.device) -> str:
    """The process-group backend for ranks on ``device``: nccl on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"
