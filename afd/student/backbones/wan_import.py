"""Import published Self-Forcing and Causal-Forcing checkpoints into a ``CausalWanStudent``.

Both projects train a ``WanDiffusionWrapper`` whose original-Wan ``CausalWanModel`` sits at
``self.model``, and save ``torch.save`` files of dicts of state dicts (read from their trainers'
``save`` and their ``inference.py``):

- Self-Forcing (guandeh17/Self-Forcing, ``trainer/distillation.py``): ``{"generator",
  "critic", "generator_ema"}`` (``generator_ema`` only once the EMA has started);
  ``inference.py`` loads ``state_dict["generator_ema" if --use_ema else "generator"]``.
- Causal-Forcing (thu-ml/Causal-Forcing, ``trainer/distillation.py``): only ``{"generator_ema"}``
  once the EMA has started, else only ``{"generator"}``; its README loads the chunk-wise file
  without ``--use_ema`` (``generator``) and the frame-wise ones with it (``generator_ema``).

Keys are ``model.<original Wan key>``. Their EMA copies are built from
``fsdp_module.module.named_parameters()``, so FSDP (and activation-checkpoint or
``torch.compile``) wrappers can leave ``_fsdp_wrapped_module.`` (``_checkpoint_wrapped_module.``,
``_orig_mod.``) in the names, e.g. ``model._fsdp_wrapped_module.blocks.0...``; their own loaders
strip these, and so does this module. No other layout (a bare state dict) is read: neither
project's inference loads one.

The original-Wan names are converted to diffusers' ``WanTransformer3DModel`` names with diffusers'
own converter (``convert_wan_transformer_to_diffusers``) and prefixed ``transformer.``, the
student's attribute. The weights are checked against the model that ``config`` builds (keys, then
shapes) before a strict load; every failure is one ``ValueError`` line naming the file.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects. Nothing here touches the hub.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from afd.student.backbones.wan import CausalWanStudent
from afd.student.backbones.wan_config import WanStudentConfig

EMA_STATE = "generator_ema"
RAW_STATE = "generator"
WRAPPER_PREFIX = "model."  # WanDiffusionWrapper.model: the original Wan model
STUDENT_PREFIX = "transformer."  # CausalWanStudent.transformer: the diffusers model
# Name segments that distributed / checkpointing / compile wrappers insert into parameter names.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
SOURCES = {"self-forcing": "Self-Forcing", "causal-forcing": "Causal-Forcing"}
_SHOWN = 4  # keys listed in an error


def read_generator_state(path: str | Path, ema: bool = True, source: str = "self-forcing") -> dict[str, torch.Tensor]:
    """The generator's state dict in a Self-Forcing / Causal-Forcing ``.pt`` file: its
    ``generator_ema`` entry (``ema``) or ``generator``, keys as saved (``model.`` + original Wan
    names, possibly with wrapper segments). Tensors keep their saved shapes and dtypes."""
    path = Path(path)
    name = SOURCES[source]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        # mmap: only the chosen state's tensors are read from disk, not the critic's or the other
        # copy (a 1.3B checkpoint holds up to three 5.7 GB states). It needs the zip format
        # torch.save has written since 1.6; an older file is read whole.
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({first})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: expected a dict of state dicts as {name} saves, got {type(blob).__name__}")
    want = EMA_STATE if ema else RAW_STATE
    if want not in blob:
        present = sorted(map(str, blob))
        other = RAW_STATE if ema else EMA_STATE
        hint = (f"; import {other!r} instead ({'--no-ema / ema=False' if ema else 'without --no-ema / ema=True'})"
                if other in blob else "")
        raise ValueError(f"{path}: no {want!r} state in this {name} checkpoint; it holds {present}{hint}")
    state = blob[want]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: {want!r} is not a state dict of tensors")
    return state


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without wrapper segments (anywhere) and without the leading ``model.``: the original
    Wan model's own names. Keys outside ``model.`` (e.g. a GAN head) are kept, to be reported."""
    out = {}
    for key, value in state.items():
        for seg in WRAPPER_SEGMENTS:
            key = key.replace(seg, "")
        out[key.removeprefix(WRAPPER_PREFIX)] = value
    return out


def to_diffusers_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Original-Wan keys -> ``CausalWanStudent`` keys (``transformer.`` + diffusers' names).

    Returns (the renamed state, the original name of each new key). Tensors are not changed: the
    two layouts differ only in names (both use a Conv3d patch embedding, (out, in) linears,
    (1, 6, dim) / (1, 2, dim) modulations)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    out, origin = {}, {}
    # One key at a time, so each new name keeps its original one for the errors. The converter
    # pops from the dict it is given, so it gets a fresh one.
    for key, value in state.items():
        for new, tensor in convert_wan_transformer_to_diffusers({key: value}).items():
            out[STUDENT_PREFIX + new] = tensor
            origin[STUDENT_PREFIX + new] = key
    return out, origin


# diffusers names of a block's parts -> original Wan names (the inverse of diffusers' converter).
_BLOCK_PARTS = {
    **{f"attn{i}.{d}": f"{o}.{w}" for i, o in ((1, "self_attn"), (2, "cross_attn"))
       for d, w in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"), ("norm_q", "norm_q"),
                    ("norm_k", "norm_k"))},
    "norm2": "norm3",  # the affine cross-attention norm: norm3 in Wan, norm2 in diffusers
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_TOP_PARTS = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def to_original_wan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CausalWanStudent`` keys (with or without ``transformer.``) -> original Wan names, the
    layout Self-Forcing / Causal-Forcing save under ``model.``; tensors unchanged. For round
    trips and tests; a key of no Wan T2V transformer is an error naming it."""
    out = {}
    for key, value in state.items():
        name = key.removeprefix(STUDENT_PREFIX)
        m = _BLOCK_KEY.fullmatch(name)
        if name == "scale_shift_table":
            new = "head.modulation"
        elif m and m.group(2) == "scale_shift_table":
            new = f"blocks.{m.group(1)}.modulation"
        else:
            module, _, param = (m.group(2) if m else name).rpartition(".")
            parts = _BLOCK_PARTS if m else _TOP_PARTS
            if module not in parts:
                raise ValueError(f"{key!r} is not a parameter of a Wan T2V transformer")
            new = (f"blocks.{m.group(1)}." if m else "") + f"{parts[module]}.{param}"
        out[new] = value
    return out


def checkpoint_sizes(state: dict[str, torch.Tensor]) -> str:
    """The sizes a diffusers-keyed state implies (what a config must say), e.g.
    "layers=30 dim=1536 channels=16 ffn_dim=8960 text_dim=4096 freq_dim=256 patch=(1, 2, 2)"."""
    def shape(key):
        t = state.get(STUDENT_PREFIX + key)
        return tuple(t.shape) if t is not None else None

    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k.removeprefix(STUDENT_PREFIX)))}
    parts = [f"layers={max(blocks) + 1 if blocks else 0}"]
    patch = shape("patch_embedding.weight")  # (dim, channels, pt, ph, pw)
    if patch is not None and len(patch) == 5:
        parts += [f"dim={patch[0]}", f"channels={patch[1]}"]
    for field, key, axis in (("ffn_dim", "blocks.0.ffn.net.0.proj.weight", 0),
                             ("text_dim", "condition_embedder.text_embedder.linear_1.weight", 1),
                             ("freq_dim", "condition_embedder.time_embedder.linear_1.weight", 1)):
        s = shape(key)
        if s is not None and len(s) == 2:
            parts.append(f"{field}={s[axis]}")
    if patch is not None and len(patch) == 5:
        parts.append(f"patch={patch[2:]}")
    return " ".join(parts)


def config_sizes(config: WanStudentConfig) -> str:
    """The same sizes as ``checkpoint_sizes``, from a config."""
    return (f"layers={config.layers} dim={config.dim} channels={config.channels} ffn_dim={config.ffn_dim} "
            f"text_dim={config.text_dim} freq_dim={config.freq_dim} patch={tuple(config.patch_size)}")


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def check_fits(state: dict[str, torch.Tensor], origin: dict[str, str], model: CausalWanStudent,
               path: str | Path, name: str) -> None:
    """One ``ValueError`` line, naming ``path``, if ``state`` (diffusers-keyed) does not fit
    ``model`` exactly: missing / unexpected keys (by their original Wan names), else the first
    shape mismatch (key, the config's shape, the file's)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    found, want = checkpoint_sizes(state), config_sizes(model.config)
    # The sizes say which config field to change; when they agree they would only be noise.
    sizes = f" (the file's sizes: {found}; the config's: {want})" if found != want else ""
    if missing or unexpected:
        miss = [next(iter(to_original_wan_keys({k: None}))) for k in missing]
        extra = [origin[k] for k in unexpected]
        what = "; ".join(s for s in (f"missing {len(miss)}: {_listed(miss)}" if miss else "",
                                     f"unexpected {len(extra)}: {_listed(extra)}" if extra else "") if s)
        raise ValueError(f"{path}: the {name} weights do not fit the config ({what}){sizes}")
    for key in own:
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise ValueError(f"{path}: {origin[key]} ({key}) has shape {tuple(state[key].shape)} in the file, "
                             f"the config expects {tuple(own[key].shape)}{sizes}")


def load_wan_checkpoint(path: str | Path, config: WanStudentConfig, ema: bool = True,
                        source: str = "self-forcing") -> CausalWanStudent:
    """A ``CausalWanStudent`` built from ``config`` holding the generator weights of a
    Self-Forcing or Causal-Forcing ``.pt`` file (``source``), the EMA copy unless ``ema=False``;
    float32, eval mode, on the CPU."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    state = read_generator_state(path, ema, source)
    state, origin = to_diffusers_keys(strip_wrappers(state))
    model = CausalWanStudent(config)
    check_fits(state, origin, model, path, SOURCES[source])
    model.load_state_dict(state, strict=True)  # copies (and casts, e.g. bf16 -> fp32) into the model
    return model.eval()


def load_self_forcing_checkpoint(path: str | Path, config: WanStudentConfig, ema: bool = True) -> CausalWanStudent:
    """A Self-Forcing checkpoint (e.g. ``checkpoints/self_forcing_dmd.pt`` of gdhe17/Self-Forcing)
    as a ``CausalWanStudent``; see ``load_wan_checkpoint``."""
    return load_wan_checkpoint(path, config, ema, "self-forcing")


def load_causal_forcing_checkpoint(path: str | Path, config: WanStudentConfig, ema: bool = True) -> CausalWanStudent:
    """A Causal-Forcing checkpoint (e.g. ``framewise/causal_forcing.pt`` of zhuhz22/Causal-Forcing)
    as a ``CausalWanStudent``; see ``load_wan_checkpoint``. Its README loads the chunk-wise file
    without ``--use_ema``, i.e. its ``generator`` state (``ema=False`` here)."""
    return load_wan_checkpoint(path, config, ema, "causal-forcing")


IMPORTERS = {"self-forcing": load_self_forcing_checkpoint, "causal-forcing": load_causal_forcing_checkpoint}
