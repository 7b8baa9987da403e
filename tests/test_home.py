"""Where shipped checkpoints are found (afd.student.shipped): $AFD_HOME/checkpoints first, then the
checkpoints bundled in the installed package; ``afd reproduce`` ships into the former."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from afd.student import shipped

ROOT = Path(__file__).resolve().parents[1]


def fake_student(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"format": "afd-student", "config": {}}))
    return d


def test_afd_home_defaults_to_the_checkout_and_follows_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("AFD_HOME", raising=False)
    assert shipped.afd_home() == ROOT  # running from the source checkout
    assert shipped.find_shipped("base-state") == ROOT / "checkpoints" / "base-state"
    monkeypatch.setenv("AFD_HOME", str(tmp_path / "home"))
    assert shipped.shipping_root() == tmp_path / "home" / "checkpoints"


def test_home_comes_before_the_bundled_checkpoints(monkeypatch, tmp_path):
    home, bundled = tmp_path / "home", tmp_path / "bundled"
    monkeypatch.setenv("AFD_HOME", str(home))
    monkeypatch.setattr(shipped, "BUNDLED", bundled)
    fake_student(bundled, "a")
    fake_student(bundled, "b")
    mine = fake_student(home / "checkpoints", "b")
    assert shipped.shipped_names() == ["a", "b"]
    assert shipped.resolve_checkpoint("a") == bundled / "a"
    assert shipped.resolve_checkpoint("b") == mine
    with pytest.raises(FileNotFoundError, match="shipped checkpoints: a, b"):
        shipped.resolve_checkpoint("c")
    assert shipped.find_shipped("../a") is None


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_checkpoints(tmp_path):
    """``pip install .`` gives an afd that finds every shipped student without the checkout."""
    if not (ROOT / "setup.py").is_file() or shutil.which("git") is None:
        pytest.skip("needs the source checkout")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("afd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for student in shipped.shipped_names():
        assert f"afd/_checkpoints/{student}/model.safetensors" in names
        assert f"afd/_checkpoints/{student}/config.json" in names
