"""The tiny random latent Wan student (afd.student.backbones.wan_tiny, ``afd student tiny-wan``) trained end
to end by ``afd train`` with configs/train/afd-wan-tiny.yaml: the world teacher's clips adapted to its
decoded format, the world judge on its clips, a checkpoint and a resume, the adapted student
reloaded. Also: configs/train/afd-self-forcing.yaml parses, scripts/smoke_real.py skips without a
checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afd.cli import main

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "train" / "afd-wan-tiny.yaml"


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    """``afd student tiny-wan`` into a temporary folder: its vae/, umt5/ and student/."""
    pytest.importorskip("diffusers")
    out = tmp_path_factory.mktemp("tiny-wan")
    assert main(["student", "tiny-wan", "--out", str(out)]) == 0
    return out


def test_the_assets_load_and_cover_the_world_prompts(tiny_wan, capsys):
    from afd.student.base import Student
    from afd.world.splits import load_split

    meta = json.loads((tiny_wan / "student" / "config.json").read_text())["config"]
    assert meta["vae_path"] == str((tiny_wan / "vae").resolve()) and Path(meta["vae_path"]).is_absolute()
    assert meta["text_encoder_path"] == str((tiny_wan / "umt5").resolve())
    student = Student.load(tiny_wan / "student")
    fmt = student.fmt
    assert (fmt.frames, fmt.height, fmt.width, fmt.fps) == (21, 32, 32, 10.5) and student.text.dim == 16
    # every word of the training prompts is in the vocabulary: no <unk>
    tok = student.text.tokenizer
    prompts = load_split("physics-train")
    ids = tok(prompts, padding="max_length", max_length=student.text.max_tokens)["input_ids"]
    assert tok.unk_token_id not in {i for row in ids for i in row}
    # an existing folder is one error unless --force
    assert main(["student", "tiny-wan", "--out", str(tiny_wan)]) == 2
    assert "exists: choose another --out, or pass --force" in capsys.readouterr().err


def test_a_rolling_cache_streams_the_tiny_wan_student(tiny_wan, tmp_path, capsys):
    """``afd sample --stream-cache roll`` streams the 6-frame student to 12 latent frames, up to
    its 16 rotary positions (one clear error past them); the bench's cache stays at the window."""
    from afd.bench.stream import _one_length
    from afd.video.io import read_video

    student = str(tiny_wan / "student")
    args = ["sample", "--checkpoint", student, "--prompt", "a small red ball falls on a black background",
            "--out", str(tmp_path / "o"), "--no-mp4", "--stream-cache", "roll"]
    assert main([*args, "--frames", "18"]) != 0
    assert "past the 16 frame positions a rolling cache can number" in capsys.readouterr().err
    assert main([*args, "--frames", "12"]) == 0
    assert read_video(tmp_path / "o" / "clip00000.npz").frames.shape[0] == 1 + 4 * 11  # the VAE's decode
    # the window (3 frames) and the block just written; threads None leaves torch's setting alone
    with torch.random.fork_rng(devices=[]):  # the bench seeds torch for its own process
        rows = [_one_length(student, n, 2, 1, None, "cpu", "roll") for n in (9, 15)]
        wan = _one_length("random-wan", 24, 1, 1, None, "cpu", "roll")
    assert {r["cache_frames"] for r in rows} == {6} and all(r["stream_cache"] == "roll" for r in rows)
    # the bench's random Wan student (``--checkpoint random-wan``): the default student's window
    assert wan["cache_frames"] == 12 + 4


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from afd.io_utils import load_safetensors

    return load_safetensors(folder / "model.safetensors")


def test_two_iterations_train_checkpoint_resume_and_reload(tiny_wan, tmp_path, capsys):
    """Iteration 1, then --resume to iteration 2; the world judge measures the rollouts and scores the
    result (the base eval is left to the slow test)."""
    from afd.student.base import load_student_model

    run = tmp_path / "run"
    args = ["train", "--no-progress", "--config", str(CONFIG), f"run.dir={run}",
            f"teacher.cache_dir={tmp_path / 'cache'}", f"student.checkpoint={tiny_wan / 'student'}",
            "eval.final_prompts_per_split=1", "eval.before=false"]
    assert main([*args, "train.steps=1"]) == 0
    assert (run / "checkpoint").is_dir() and (run / "eval.json").is_file()
    assert main([*args, "train.steps=2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "afd finished 2 iterations" in out and "physical_consistency" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["teacher_calls_paid"] >= 1 and "loss_nft" in r and "reward_fidelity" in r for r in rows)
    assert json.loads((run / "eval.json").read_text())["groups"]["physics"]["total"] >= 0
    assert (run / "strip.png").is_file()
    base, adapted = _weights(tiny_wan / "student"), _weights(run / "student")
    assert base.keys() == adapted.keys()
    assert any(not torch.equal(base[k], adapted[k]) for k in base), "training left every weight as it was"
    model = load_student_model(run / "student")
    assert model.config == load_student_model(tiny_wan / "student").config
    from afd.student.sample import generate

    clip = generate(model, ["a small red ball falls on a gray background"], [0], amp=False)
    assert clip.shape == (1, 21, 3, 32, 32) and clip.isfinite().all()


@pytest.mark.slow
def test_the_readme_recipe_runs_as_written(tmp_path):
    """`afd student tiny-wan --out runs/tiny-wan` then `afd train --config configs/train/afd-wan-tiny.yaml
    train.steps=2 run.dir=...` in a fresh process, from a working directory of its own."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    def afd(*argv):
        out = subprocess.run([sys.executable, "-m", "afd", *argv], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    afd("student", "tiny-wan", "--out", "runs/tiny-wan")
    out = afd("train", "--no-progress", "--config", str(CONFIG), "train.steps=2", "run.dir=runs/x",
              "teacher.cache_dir=cache")
    assert "afd finished 2 iterations" in out
    assert (tmp_path / "runs" / "x" / "student" / "model.safetensors").is_file()


def test_the_self_forcing_config_parses(tmp_path):
    """configs/train/afd-self-forcing.yaml loads with the config loader. Before the `dist:` section
    exists in AdaptConfig, the file is read without it (the other keys must still be right)."""
    import dataclasses

    import yaml

    from afd.config import load_config
    from afd.train.config import AdaptConfig

    path = REPO / "configs" / "train" / "afd-self-forcing.yaml"
    if "dist" in {f.name for f in dataclasses.fields(AdaptConfig)}:
        cfg = load_config(AdaptConfig, path)
        assert cfg.dist.strategy == "fsdp2" and cfg.dist.activation_checkpointing
    else:
        data = yaml.safe_load(path.read_text())
        assert data.pop("dist") == {"strategy": "fsdp2", "mixed_precision": "bf16", "activation_checkpointing": True}
        data["extends"] = str(REPO / "configs" / "train" / data["extends"])
        stripped = tmp_path / "afd-self-forcing-nodist.yaml"
        stripped.write_text(yaml.safe_dump(data))
        cfg = load_config(AdaptConfig, stripped)
    # Table 3 of the paper
    assert (cfg.student.lora_rank, cfg.student.lora_alpha) == (256, 256)
    assert (cfg.train.lr, tuple(cfg.train.betas), cfg.train.weight_decay, cfg.train.grad_clip) == (1e-5, (0.9, 0.999),
                                                                                                  1e-4, 1.0)
    assert (cfg.afd.beta, cfg.afd.lambda_prior, cfg.afd.advantage.a_max, cfg.train.old_decay) == (0.1, 1e-4, 5.0, 0.99)
    assert cfg.train.amp and cfg.train.device == "cuda" and cfg.eval.judge == "none"
    assert cfg.teacher.spec.startswith("api:") and cfg.train.prompts_file


def test_the_real_checkpoint_smoke_script_skips_without_one():
    env = {k: v for k, v in os.environ.items() if k != "AFD_REAL_STUDENT"}
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "smoke_real.py")], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("skipped: set AFD_REAL_STUDENT")
