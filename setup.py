"""Build hook: the wheel carries the shipped checkpoints (checkpoints/*) as package data under
``afd/_checkpoints``, so an installed afd finds every shipped student (afd/student/shipped.py).
Everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FILES = ("config.json", "model.safetensors", "README.md")


class BuildWithCheckpoints(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "checkpoints"
        dest = Path(self.build_lib) / "afd" / "_checkpoints"
        for folder in sorted(p for p in src.iterdir() if (p / "config.json").is_file()) if src.is_dir() else []:
            (dest / folder.name).mkdir(parents=True, exist_ok=True)
            for name in SHIPPED_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, dest / folder.name / name)


setup(cmdclass={"build_py": BuildWithCheckpoints})
