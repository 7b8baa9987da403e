"""Optional LoRA on the student (peft), the paper's adaptation setting.

Adapters are injected in place into the transformer layers' linear maps, so the model keeps its
own class and methods (``forward_train``, ``to_velocity``, the rollout) and only the adapter
weights train. With LoRA the frozen reference of the prior term is the same model with its
adapters switched off (``adapters_disabled``), so no second copy of the base is held.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from afd.student.base import StudentModel


def add_lora(model: StudentModel, rank: int, alpha: float) -> StudentModel:
    """Inject LoRA adapters (rank, alpha) into ``model`` in place; freeze everything else.

    The adapters' B matrices start at zero, so the model's outputs are unchanged at first."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    targets = model.lora_target_modules()  # the backbone names its own adaptable maps
    model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0), model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


@contextmanager
def adapters_disabled(model: nn.Module):
    """Run ``model`` as its base: every LoRA adapter off inside the block."""
    layers = lora_layers(model)
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)


class AdaptersOff:
    """A view of a LoRA student as its frozen base, for the prior term's v_ref.

    Exposes the methods the losses call (``forward_train``, ``forward_noised_context``,
    ``to_velocity``, ``to_x0``); the config is the student's."""

    def __init__(self, model: StudentModel):
        self.model = model
        self.config = model.config

    def forward_train(self, *args, **kwargs):
        with adapters_disabled(self.model):
            return self.model.forward_train(*args, **kwargs)

    def forward_noised_context(self, *args, **kwargs):
        with adapters_disabled(self.model):
            return self.model.forward_noised_context(*args, **kwargs)

    def to_velocity(self, *args, **kwargs):
        return self.model.to_velocity(*args, **kwargs)

    def to_x0(self, *args, **kwargs):
        return self.model.to_x0(*args, **kwargs)


@torch.no_grad()
def merged_copy(model: StudentModel) -> StudentModel:
    """A plain backbone of ``model``'s class whose weights are ``model``'s with the adapters merged in
    (what gets saved with ``save_pretrained``); ``model`` itself is unchanged."""
    plain = type(model)(model.config).to(next(model.parameters()).device)
    state = {}
    lora = {n: m for n, m in model.named_modules() if m in set(lora_layers(model))}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.clone()
    for n, m in lora.items():
        for adapter in m.active_adapters:
            state[f"{n}.weight"] += m.get_delta_weight(adapter)
    plain.load_state_dict(state)
    return plain


ADAPTER_FORMAT = "afd-lora-adapter"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapter(model: StudentModel, directory, extra: dict | None = None):
    """Write only ``model``'s LoRA tensors (``adapter.safetensors``) and their rank, alpha and
    target maps (``adapter_config.json``) to ``directory``, atomically: for a 1.3B student the
    adapters are the part worth shipping. ``load_adapter`` puts them back onto the base."""
    import json
    from pathlib import Path

    from afd.io_utils import atomic_write_text, save_safetensors_atomic

    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if "lora_" in k}
    save_safetensors_atomic(tensors, directory / ADAPTER_WEIGHTS)
    first, adapted = layers[0], set(layers)
    adapter = first.active_adapters[0]
    meta = {"format": ADAPTER_FORMAT, "rank": int(first.r[adapter]), "alpha": float(first.lora_alpha[adapter]),
            "target_modules": sorted(n for n, m in model.named_modules() if m in adapted), "extra": extra or {}}
    atomic_write_text(directory / ADAPTER_CONFIG, json.dumps(meta, indent=2) + "\n")
    return directory


def load_adapter(model: StudentModel, directory) -> StudentModel:
    """Inject the adapters saved by ``save_adapter`` into ``model`` (its base, without adapters)
    in place and load their weights strictly; one error naming the file on any mismatch."""
    import json
    from pathlib import Path

    from afd.io_utils import check_state_matches, load_safetensors

    directory = Path(directory)
    cfg_path = directory / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing (not a LoRA adapter folder written by afd)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{cfg_path}: format is {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    if has_lora(model):
        raise ValueError(f"{directory}: the model already has LoRA adapters")
    if sorted(meta["target_modules"]) != sorted(model.lora_target_modules()):
        raise ValueError(f"{cfg_path}: the adapters target maps this model does not have "
                         f"(saved {len(meta['target_modules'])}, the model's {len(model.lora_target_modules())})")
    add_lora(model, int(meta["rank"]), float(meta["alpha"]))
    tensors = load_safetensors(directory / ADAPTER_WEIGHTS)
    own = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    check_state_matches(own, tensors, directory / ADAPTER_WEIGHTS, "adapter weights")
    model.load_state_dict(tensors, strict=False)
    return model
