"""How the student trains across ``torchrun`` ranks (``dist.strategy``), on torch's own engines.

- **ddp**: ``DistributedDataParallel`` all-reduces the student's gradients in buckets during
  backward. DDP only hooks ``forward``, and the methods call the student's other views too
  (``forward_train``, ``forward_with_prefix``), so inside ``StudentParallel.routed`` each of those
  calls goes through the DDP wrapper's forward (``_MethodCall``). Outside it (rollouts with the
  old policy, evaluation, saving) the student is the plain module.
- **fsdp2**: ``fully_shard`` on every transformer block (``repeated_blocks``), then on the whole
  student, with ``register_fsdp_forward_method`` for the other views. Parameters, gradients and
  AdamW state are split over ranks. ``mixed_precision: bf16`` computes with bf16 parameters and
  reduces gradients in fp32. Saving gathers full tensors on every rank and rank 0 writes them, in
  the same files as a one-process run (``afd.train.checkpoint``), so a run may resume under
  another strategy or rank count; loading scatters them back (``afd.dist.match_layout``).
- **activation_checkpointing**: each block's activations are recomputed in backward
  (``torch.distributed._composable.checkpoint``, which keeps parameter names), with any strategy.

Only the student is wrapped: the discriminator and DMD's critic are small, and average their
gradients explicitly (``afd.dist.average_gradients``). With one process nothing is wrapped.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn

from afd import dist
from afd.train.config import DistConfig

# The student's views with parameters.
ROUTED = ("forward", "forward_train", "forward_with_prefix", "forward_noised_context")


class _MethodCall(nn.Module):
    """The module DDP wraps: ``forward(name, *args)`` runs the student's method ``name``, taken from
    its class so that the routed instance attributes below are not called again."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, name: str, *args, **kwargs):
        return getattr(type(self.model), name)(self.model, *args, **kwargs)


class StudentParallel:
    """The student's data-parallel engine for one run (see the module docstring)."""

    def __init__(self, cfg: DistConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.ddp: nn.Module | None = None
        self.sharded = False

    def prepare(self, student: nn.Module) -> None:
        """Wrap ``student`` in place; call after every copy of it is made (old policy, reference,
        DMD's critic) and before its optimizer is built (FSDP2 replaces its parameters)."""
        if self.cfg.activation_checkpointing:
            from torch.distributed._composable import checkpoint

            for block in student.repeated_blocks():
                checkpoint(block)
        if dist.world_size() == 1:
            return
        if self.cfg.strategy == "fsdp2":
            self._shard(student)
        else:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # No buffer sync in forward: the student's buffers are constants, and a broadcast in every
            # forward would make each call a collective.
            self.ddp = DistributedDataParallel(_MethodCall(student), device_ids=ids, forward_sync_buffers=False)

    def _shard(self, student: nn.Module) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(self.device.type, (dist.world_size(),))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if self.cfg.mixed_precision == "bf16" else MixedPrecisionPolicy())
        for block in student.repeated_blocks():
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(student, mesh=mesh, mp_policy=mp)
        for name in ROUTED[1:]:
            register_fsdp_forward_method(student, name)
        self.sharded = True

    @contextmanager
    def routed(self, student: nn.Module):
        """Inside the block, the student's views run through DDP (a no-op for other strategies)."""
        if self.ddp is None:
            yield student
            return
        for name in ROUTED:
            object.__setattr__(student, name, lambda *a, _n=name, **k: self.ddp(_n, *a, **k))
        try:
            yield student
        finally:
            for name in ROUTED:
                student.__dict__.pop(name, None)

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> float:
        """Clip the (already synchronised) gradients to ``max_norm``; returns the global norm."""
        return float(dist.gathered(torch.nn.utils.clip_grad_norm_(params, max_norm)))

    def plain_copy(self, student: nn.Module, like: nn.Module) -> nn.Module:
        """An unsharded copy of the sharded ``student`` on every rank (a collective), built by
        copying ``like`` (a plain module of the same architecture, e.g. the old policy)."""
        plain = copy.deepcopy(like)
        plain.load_state_dict(full_state_dict(student))
        return plain


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with sharded tensors gathered (a collective under FSDP2: every rank calls it)."""
    return {k: dist.gathered(v.detach()) for k, v in module.state_dict().items()}


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """``opt.state_dict()`` with sharded state tensors gathered (every rank calls it under FSDP2)."""
    sd = opt.state_dict()
    state = {i: {k: (dist.gathered(v) if torch.is_tensor(v) else v) for k, v in st.items()}
             for i, st in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}
