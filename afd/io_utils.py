"""Atomic file writes and checked safetensors loading: nothing computed is lost or half-written."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the file helpers must not load torch (the CLI uses them)
    import torch


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _create_temp(directory: Path, prefix: str) -> tuple[int, str]:
    """A new file in ``directory`` opened for writing: (fd, path). Unlike ``tempfile.mkstemp``
    (always 0600) it is created with mode 0666 less the umask, as ``open`` would create it, so the
    file renamed over the target gets the permissions users expect (typically 0644)."""
    while True:
        tmp = str(directory / f"{prefix}{secrets.token_hex(6)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.
    The file's mode follows the umask, as with ``open``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with a clear error when it is missing or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e


def load_safetensors_checked(module: torch.nn.Module, path: str | os.PathLike, prefix: str = "") -> None:
    """Load ``path`` into ``module`` strictly, naming missing/unexpected keys and shape mismatches."""
    tensors = load_safetensors(path)
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    check_state_matches(module.state_dict(), tensors, path)
    module.load_state_dict(tensors, strict=True)


def check_state_matches(own: dict, tensors: dict, source, what: str = "weights", target: str = "the model") -> None:
    """One ValueError naming ``source`` when ``tensors`` and ``own`` (name -> tensor) differ in
    their names (a few missing / unexpected listed) or in any tensor's shape."""
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source}: {what} do not match {target} "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{source}: '{k}' has shape {tuple(v.shape)}, {target} expects {tuple(own[k].shape)}")


def read_pretrained_meta(directory: str | os.PathLike, format_name: str, kind: str,
                         config_file: str = "config.json") -> dict:
    """Parse ``directory/config.json`` of a ``save_pretrained`` folder and check its format tag.

    ``kind`` ("student checkpoint", "discriminator") only words the errors, which name the file and problem.
    Returns the JSON object (it has a ``config`` mapping).
    """
    import json

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such {kind} directory")
    path = directory / config_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected a {kind.split()[0]} saved with save_pretrained)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != format_name or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: not an afd {kind.split()[0]} config "
                         f"(expected format '{format_name}' with a 'config' object)")
    return meta
