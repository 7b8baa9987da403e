"""Training checkpoints that resume exactly: weights, EMA, optimizer state, step, config.

Layout of a checkpoint directory (all tensors in safetensors, everything else JSON; nothing is
ever unpickled)::

    <name>.safetensors     one per module (e.g. model, ema)
    optim-<name>.safetensors + state.json["optimizers"][<name>]   per optimizer
    state.json             step, config, anything else the loop needs (JSON-able)

A checkpoint is written into a temporary sibling directory and swapped in with renames, so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from afd.io_utils import atomic_write_text, load_safetensors, load_safetensors_checked, save_safetensors_atomic

STATE_FILE = "state.json"


def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
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
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
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


def save_checkpoint(directory: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict) -> Path:
    """Write a checkpoint atomically (see module docstring). ``state`` must be JSON-able."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        save_safetensors_atomic({k: v.detach().contiguous() for k, v in module.state_dict().items()},
                                tmp / f"{name}.safetensors")
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
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore modules and optimizers in place; returns the saved ``state`` dict."""
    directory = Path(directory)
    state = read_checkpoint_state(directory)
    for name, module in modules.items():
        load_safetensors_checked(module, directory / f"{name}.safetensors")
    for name, opt in optimizers.items():
        if name not in state.get("optimizers", {}):
            raise ValueError(f"{directory / STATE_FILE}: no optimizer state for '{name}'")
        _optimizer_from_tensors(opt, load_safetensors(directory / f"optim-{name}.safetensors"), state["optimizers"][name])
    return state
