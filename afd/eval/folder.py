"""Score a clip folder (``manifest.jsonl`` + clips), the format ``afd world render`` and
``afd sample`` write."""

from __future__ import annotations

from pathlib import Path

from afd.eval.score import ClipScore, evaluate
from afd.teacher.folder import read_manifest
from afd.video.io import read_video


def evaluate_folder(directory: str | Path) -> tuple[dict, list[ClipScore]]:
    """Read every clip listed in ``DIR/manifest.jsonl`` and score it. Errors name the file."""
    entries = read_manifest(directory)
    videos = [read_video(e["path"]) for e in entries]
    return evaluate(videos, [e["prompt"] for e in entries], names=[e["path"] for e in entries])
