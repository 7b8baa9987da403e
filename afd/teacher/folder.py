"""A teacher backed by a folder of clips someone already paid for.

Layout: ``DIR/manifest.jsonl`` with one ``{"prompt": str, "seed": int, "path": str}`` per line
(``path`` relative to DIR, or absolute), and the clips (.mp4, .gif or .npz) it points to.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from afd.teacher.base import Teacher, TeacherError, check_request
from afd.video.core import Video
from afd.video.io import read_video

MANIFEST = "manifest.jsonl"


class ManifestError(ValueError):
    """A malformed manifest; the message names the file and line."""


def read_manifest(directory: str | Path) -> list[dict]:
    """Parse and validate ``DIR/manifest.jsonl``. Paths come back absolute."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: not found (a clip folder needs a {MANIFEST})")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(e, dict):
            raise ManifestError(f"{path}:{n}: expected a JSON object, got {type(e).__name__}")
        for field, typ in (("prompt", str), ("seed", int), ("path", str)):
            if field not in e:
                raise ManifestError(f"{path}:{n}: missing field {field!r} (need prompt, seed, path)")
            if not isinstance(e[field], typ) or isinstance(e[field], bool):
                raise ManifestError(
                    f"{path}:{n}: field {field!r} must be {typ.__name__}, got {type(e[field]).__name__}"
                )
        clip = Path(e["path"])
        e = dict(e, path=str(clip if clip.is_absolute() else directory / clip))
        entries.append(e)
    if not entries:
        raise ManifestError(f"{path}: manifest lists no clips")
    return entries


class FolderTeacher(Teacher):
    """Serves clips listed in a manifest.

    ``match="exact"`` needs a clip for each exact (prompt, seed). ``match="any-seed"`` maps the
    requested seed onto the prompt's available clips (sorted by seed, index ``seed % count``),
    for folders whose seeds are not the ones the trainer asks for.
    """

    def __init__(self, directory: str | Path, match: str = "exact"):
        if match not in ("exact", "any-seed"):
            raise ValueError(f"match must be 'exact' or 'any-seed', got {match!r}")
        self.directory, self.match = Path(directory), match
        self._entries = read_manifest(self.directory)
        self._by_key = {(e["prompt"], e["seed"]): e["path"] for e in self._entries}
        by_prompt = defaultdict(list)
        for e in self._entries:
            by_prompt[e["prompt"]].append((e["seed"], e["path"]))
        self._by_prompt = {p: sorted(v) for p, v in by_prompt.items()}
        digest = hashlib.sha256((self.directory / MANIFEST).read_bytes()).hexdigest()[:12]
        self._id = f"folder-{digest}-{match}"

    @property
    def id(self) -> str:
        return self._id

    def _path(self, prompt: str, seed: int) -> str:
        if prompt not in self._by_prompt:
            raise TeacherError(f"{self.directory}: no clip for prompt {prompt!r} in {MANIFEST}")
        if self.match == "any-seed":
            clips = self._by_prompt[prompt]
            return clips[seed % len(clips)][1]
        if (prompt, seed) not in self._by_key:
            seeds = [s for s, _ in self._by_prompt[prompt]]
            raise TeacherError(
                f"{self.directory}: no clip for prompt {prompt!r} with seed {seed}; available seeds: "
                f"{seeds[:20]} (use match='any-seed' to map seeds onto available clips)"
            )
        return self._by_key[(prompt, seed)]

    def sample(self, prompts: list[str], seeds: list[int]) -> list[Video]:
        check_request(prompts, seeds)
        return [read_video(self._path(p, s)) for p, s in zip(prompts, seeds)]
