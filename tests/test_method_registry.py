"""One registry of methods (afd.methods.registry): every list of method names derives from it, and a
new method is two modules in afd/methods/ with no edit elsewhere (docs/training.md, "Adding a method")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

from afd.methods import MethodName, method_class
from afd.methods.base import Method
from afd.methods.registry import config_sections, method_names, reference_methods, section_users
from train_util import make_tiny_student, tiny_args

ROOT = Path(__file__).resolve().parents[1]


def test_every_list_of_methods_derives_from_the_registry():
    from afd.reproduce.config import METHODS, REFERENCE_METHODS
    from afd.train.config import AdaptConfig

    names = method_names()
    assert names == ("sft", "gan", "dmd", "afd", "oracle", "chance")  # the report order
    assert get_args(MethodName) == names and METHODS == ("base", *names)
    assert reference_methods() == REFERENCE_METHODS == ("oracle", "chance")
    assert set(config_sections()) == {"sft", "gan", "dmd", "afd"}  # the oracle and chance read afd's
    assert section_users("afd") == ("afd", "oracle", "chance")
    assert all(hasattr(AdaptConfig(), section) for section in config_sections())
    for name in names:
        cls = method_class(name)
        assert issubclass(cls, Method) and cls.name == name


def test_reading_a_config_imports_no_torch():
    code = ("import sys; from afd.config import load_config; from afd.train.config import AdaptConfig; "
            "load_config(AdaptConfig, 'configs/train/afd.yaml', ['train.method=dmd']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_worked_example_adds_a_method_in_two_files(tmp_path):
    """The two modules of docs/training.md's example, dropped into a copy of the package, give a
    method that ``afd train`` runs by name with its own config section."""
    doc = (ROOT / "docs" / "training.md").read_text()
    section = doc[doc.index("### Adding a method"):]
    blocks = re.findall(r"```python\n# (afd/methods/\w+\.py)\n(.*?)```", section, re.S)
    assert [path for path, _ in blocks] == ["afd/methods/late_sft_config.py", "afd/methods/late_sft.py"]
    shutil.copytree(ROOT / "afd", tmp_path / "pkg" / "afd",
                    ignore=shutil.ignore_patterns("__pycache__", "_checkpoints"))
    for path, code in blocks:
        (tmp_path / "pkg" / path).write_text(code)
    student = make_tiny_student(tmp_path / "student")
    run = tmp_path / "run"
    args = tiny_args(student, run, tmp_path / "cache", "train.steps=1", "eval.judge=none", "eval.strip_prompts=0",
                     "run.tensorboard=false", "train.method=late_sft", "late_sft.late_weight=3")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "afd", "train", "--no-progress", "--config",
                        str(ROOT / "configs" / "train" / "sft.yaml"), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "late_sft finished 1 iterations" in r.stdout
    saved = (run / "config.yaml").read_text()
    assert "late_sft:" in saved and "late_weight: 3" in saved
