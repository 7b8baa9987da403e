"""Where a run's prompts come from: a world split, or a user's own file of free text.

The trainer asks a prompt source for one thing, the pool of adaptation prompts (a list of
strings); the teacher is only ever asked about these. Two kinds:

- a world split (``train.split``, e.g. ``physics-train``), prompts in the world's grammar;
- a file (``train.prompts_file``): ``.txt`` with one prompt per line (blank lines and lines
  starting with ``#`` skipped), or ``.jsonl`` with one ``{"prompt": "..."}`` object per line.
  Prompts are free text: they need not follow the world grammar.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np


class PromptFileError(ValueError):
    """A prompts file that cannot be used; the message names the file and line."""


# Named splits are the built-in world's: loaded only when a run asks for one, and named by module
# path (like a student format) so that the trainer, which reads its prompts here, never imports
# the testbed.
WORLD_SPLITS = "afd.world.splits:load_split"


def read_prompts_file(path: str | Path) -> list[str]:
    """The prompts of a ``.txt`` or ``.jsonl`` file, in file order, white space trimmed.

    Raises PromptFileError for a missing file, an unknown suffix, a malformed JSONL line, an
    empty file or a duplicated prompt (a duplicate would silently double that prompt's weight)."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompts file not found")
    if path.suffix not in (".txt", ".jsonl"):
        raise PromptFileError(f"{path}: a prompts file must end in .txt (one prompt per line) or .jsonl "
                              f"(one {{\"prompt\": ...}} per line), got {path.suffix or 'no suffix'!r}")
    prompts, seen = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or (path.suffix == ".txt" and text.startswith("#")):
            continue
        if path.suffix == ".jsonl":
            text = _jsonl_prompt(path, n, text)
        if text in seen:
            raise PromptFileError(f"{path}:{n}: prompt {text!r} repeats line {seen[text]}")
        seen[text] = n
        prompts.append(text)
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts


def _jsonl_prompt(path: Path, n: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise PromptFileError(f"{path}:{n}: expected an object with a non-empty string field \"prompt\", "
                              f"got {line[:80]!r}")
    return row["prompt"].strip()


def load_prompt_pool(split: str, prompts_file: str | None) -> tuple[list[str], str]:
    """(prompts, a description for messages): the file when given, else the world split."""
    if prompts_file:
        return read_prompts_file(prompts_file), f"prompts file {prompts_file}"
    module, name = WORLD_SPLITS.split(":")
    return getattr(importlib.import_module(module), name)(split), f"split {split!r}"


def subset_pool(pool: list[str], n: int | None, where: str) -> list[str]:
    """A fixed subset of n prompts of ``pool`` in pool order (the same n for any seed, and each
    smaller subset inside each larger one, so a budget curve only adds prompts); None: the pool."""
    if n is None:
        return pool
    if not 1 <= n <= len(pool):
        raise ValueError(f"train.pool_size must be in [1, {len(pool)}] (the prompts of the {where}), got {n}")
    keep = np.sort(np.random.default_rng(0).permutation(len(pool))[:n])
    return [pool[i] for i in keep]
