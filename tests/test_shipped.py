"""The shipped students in checkpoints/: each loads, has a card, and an adapted one names the base
it was adapted from by that base's exact weights; the adapted state students work like any
shipped name through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from afd.cli import main
from afd.config import load_config
from afd.io_utils import file_sha256
from afd.reproduce.config import ReproduceConfig
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.shipped import resolve_checkpoint, shipped_names

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS_DIR = REPO / "checkpoints"  # the committed ones

ADAPTED = {"afd-state": "base-state", "afd-state-frame": "base-state-frame"}


def test_every_shipped_student_loads_and_has_a_card():
    names = shipped_names()
    bases = {"base-chunk", "base-frame", "base-state", "base-state-frame", "base-latent", "base-latent-frame"}
    assert bases | set(ADAPTED) <= set(names)
    for name in names:
        d = CHECKPOINTS_DIR / name
        assert (d / "README.md").read_text().startswith(f"# {name}"), name
        CausalVideoTransformer.from_pretrained(d)


@pytest.mark.parametrize("name, base", sorted(ADAPTED.items()))
def test_adapted_students_name_their_shipped_base(name, base):
    meta = json.loads((resolve_checkpoint(name) / "config.json").read_text())["extra"]
    assert meta["adapted_with"]["student"]["checkpoint"] == base
    assert meta["base_sha256"] == file_sha256(CHECKPOINTS_DIR / base / "model.safetensors")
    assert meta["adapted_with"]["train"]["method"] == "afd" and meta["step"] == meta["adapted_with"]["train"]["steps"]
    card = (CHECKPOINTS_DIR / name / "README.md").read_text()
    assert f"`{base}` adapted with AFD" in card
    # The card names the reproduction that ships it, and that reproduction's config does.
    found = re.search(r"afd reproduce --config (configs/reproduce/\S+\.yaml)", card)
    assert found, f"{name}'s card names no reproduce config"
    cfg = load_config(ReproduceConfig, REPO / found.group(1))
    assert name in cfg.ship and cfg.families[cfg.ship[name].split("/")[1]] == base


def test_afd_state_samples_and_evaluates_by_name(tmp_path, capsys):
    assert main(["sample", "--checkpoint", "afd-state", "--split", "physics-eval", "--per-prompt", "1",
                 "--out", str(tmp_path / "s"), "--no-mp4"]) == 0
    out = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", "afd-state", "--per-prompt", "1", "--prompts-per-split", "2",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n_videos"] == 4
