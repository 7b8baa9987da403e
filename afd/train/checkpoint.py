"""Training checkpoints that resume exactly: weights, EMA, optimizer state, step, config.

Layout of a checkpoint directory (all tensors in safetensors, everything else JSON; nothing is
ever unpickled)::

    <name>.safetensors     one per module (e.g. model, ema)
    optim-<name>.safetensors + state.json["optimizers"][<name>]   per optimizer
    state.json             step, config, anything else the loop needs (JSON-able)

A checkpoint is written into a temporary sibling directory and swapped in with renames, so a
crash mid-write leaves the previous checkpoint intact.

Modules named in ``adapters_only`` (a LoRA student and its old policy) keep only their LoRA
tensors (``lora_`` in the name): the frozen base is the run's reference student, checked by
sha256 on resume, so a checkpoint of a 1.3B model with rank-256 adapters is the adapters' size.
Tensors are always full: a sharded (FSDP2) run gathers them first (``afd.train.parallel``), and
loading lays them out as the module's own (``afd.dist.match_layout``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from afd import dist
from afd.io_utils import atomic_write_text, check_state_matches, load_safetensors, save_safetensors_atomic

STATE_FILE = "state.json"


def _is_adapter(name: str) -> bool:
    return "lora_" in name


def _optimizer_to_tensors(opt: torch.optim.Optimizer | dict) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt if isinstance(opt, dict) else opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    params = [p for g in opt.param_groups for p in g["params"]]  # state_dict's index order
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        p = params[int(idx)]
        if value.shape == p.shape:  # a moment of p: shard it as p is
            value = dist.match_layout(value, p)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(directory: str | Path, modules: dict[str, torch.nn.Module | dict],
                    optimizers: dict[str, torch.optim.Optimizer | dict], state: dict,
                    adapters_only: frozenset[str] = frozenset()) -> Path:
    """Write a checkpoint atomically (see module docstring). ``modules`` / ``optimizers`` map names
    to modules / optimizers or to their (full) state dicts; ``state`` must be JSON-able."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        sd = module if isinstance(module, dict) else module.state_dict()
        if name in adapters_only:
            sd = {k: v for k, v in sd.items() if _is_adapter(k)}
        save_safetensors_atomic({k: v.detach().contiguous() for k, v in sd.items()}, tmp / f"{name}.safetensors")
    opt_meta = {}
    for name, opt in optimizers.items():
        tensors, meta = _optimizer_to_tensors(opt)
        save_safetensors_atomic(tensors, tmp / f"optim-{name}.safetensors")
        opt_meta[name] = meta
    atomic_write_text(tmp / STATE_FILE, json.dumps({**state, "optimizers": opt_meta}, indent=1) + "\n")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def read_checkpoint_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a training checkpoint)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_checkpoint(directory: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], adapters_only: frozenset[str] = frozenset()) -> dict:
    """Restore modules and optimizers in place (strictly: every tensor the module holds, or for
    ``adapters_only`` every LoRA tensor); returns the saved ``state`` dict."""
    directory = Path(directory)
    state = read_checkpoint_state(directory)
    for name, module in modules.items():
        _load_module(module, directory / f"{name}.safetensors", name in adapters_only)
    for name, opt in optimizers.items():
        if name not in state.get("optimizers", {}):
            raise ValueError(f"{directory / STATE_FILE}: no optimizer state for '{name}'")
        _optimizer_from_tensors(opt, load_safetensors(directory / f"optim-{name}.safetensors"),
                                state["optimizers"][name])
    return state


def _load_module(module: torch.nn.Module, path: Path, adapters_only: bool) -> None:
    tensors = load_safetensors(path)
    own = module.state_dict()
    if adapters_only:  # a checkpoint written before adapter-only ones also holds the frozen base
        own = {k: v for k, v in own.items() if _is_adapter(k)}
        tensors = {k: v for k, v in tensors.items() if _is_adapter(k)}
    check_state_matches(own, tensors, path, "adapter weights" if adapters_only else "weights")
    module.load_state_dict({k: dist.match_layout(v, own[k]) for k, v in tensors.items()}, strict=not adapters_only)
