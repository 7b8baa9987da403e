"""Pretraining: a tiny run lowers the loss, resumes exactly, and the CLI reports bad configs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from afd.cli import main
from afd.config import load_config
from afd.losses import flow_matching_loss
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.text import get_text_encoder
from afd.train.pretrain import PretrainConfig, batch_at, conditioning_prompts, lr_at, pretrain
from afd.world.splits import load_split

# The 48 physics-val prompts, not the 928 of the pretrain split: a run encodes its whole pool first
# (about 30 ms a prompt on one core), and these tests need a pool, not that one.
TINY = ["batch_size=4", "model.dim=32", "model.depth=1", "model.heads=2", "eval.every=0",
        "eval.prompts_per_split=2", "eval.strip_clips=2", "log_every=1", "optim.warmup_steps=5", "split=physics-val"]


def tiny_cfg(tmp_path, name, *extra) -> PretrainConfig:
    return load_config(PretrainConfig, None, [f"out={tmp_path / name}", *TINY, *extra])


def held_out_loss(model, cfg) -> float:
    pool = load_split(cfg.split)
    total = 0.0
    for step in (10_000, 10_001):  # steps the run never trains on
        prompts, x0, _ = batch_at(step, cfg, pool)
        gen = torch.Generator().manual_seed(step)
        with torch.no_grad():
            total += flow_matching_loss(model, x0, get_text_encoder().encode(prompts), gen).item()
    return total / 2


def test_tiny_pretrain_lowers_the_loss(tmp_path):
    cfg = tiny_cfg(tmp_path, "run", "steps=60", "optim.lr=3e-3")
    torch.manual_seed(cfg.seed)
    before = held_out_loss(CausalVideoTransformer(cfg.model), cfg)
    final = pretrain(cfg, progress=False)
    after = held_out_loss(CausalVideoTransformer.from_pretrained(final), cfg)
    assert after < 0.7 * before, (before, after)
    out = tmp_path / "run"
    assert (out / "config.yaml").is_file() and list((out / "tb").iterdir())
    kinds = [json.loads(line)["kind"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 60 and kinds.count("eval") == 1
    assert (out / "samples" / "step000060.png").is_file()
    meta = json.loads((final / "config.json").read_text())
    assert meta["extra"]["trained_with"]["steps"] == 60


def test_resume_is_exact(tmp_path):
    straight = tiny_cfg(tmp_path, "a", "steps=6", "save_every=3")
    pretrain(straight, progress=False)
    first = tiny_cfg(tmp_path, "b", "steps=3", "save_every=3")
    pretrain(first, progress=False)
    pretrain(tiny_cfg(tmp_path, "b", "steps=6", "save_every=3"), resume=True, progress=False)
    for name in ("model", "ema", "optim-model"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()
               if '"train"' in line] for d in ("a", "b")]
    assert losses[0] == losses[1]


def test_lr_schedule_warms_up_then_decays():
    cfg = load_config(PretrainConfig, None, ["steps=100", "optim.warmup_steps=10", "optim.lr=1e-3"])
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] >= 1e-4


def test_text_dropout_shows_the_null_prompt_and_keeps_the_clips():
    pool = load_split("pretrain")
    off = load_config(PretrainConfig, None, ["batch_size=64"])
    on = load_config(PretrainConfig, None, ["batch_size=64", "text_dropout=0.25", "model.null_prompt=nothing"])
    prompts, clips, _ = batch_at(7, off, pool)
    prompts_on, clips_on, _ = batch_at(7, on, pool)
    assert prompts_on == prompts and torch.equal(clips_on, clips)  # dropout does not move the data stream
    assert conditioning_prompts(7, off, prompts) == prompts
    shown = conditioning_prompts(7, on, prompts)
    assert shown == conditioning_prompts(7, on, prompts)  # pure in (seed, step)
    dropped = [a for a, b in zip(shown, prompts) if a != b]
    assert set(dropped) == {"nothing"} and 5 <= len(dropped) <= 30
    with pytest.raises(ValueError, match="text_dropout"):
        load_config(PretrainConfig, None, ["text_dropout=1"])
    with pytest.raises(ValueError, match="null_prompt"):
        load_config(PretrainConfig, None, ["model.null_prompt= "])


def test_cli_errors(tmp_path, capsys):
    args = [f"out={tmp_path / 'c'}", *TINY, "steps=2"]
    assert main(["pretrain", "--no-progress", *args]) == 0
    assert main(["pretrain", "--no-progress", *args]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["pretrain", "--no-progress", "--resume", *args[:-1], "steps=2", "optim.lr=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr is" in err and "but 1.0 now" in err and "may change on resume" in err
    # the sampler default only affects evaluation and the export: it may change on resume
    assert main(["pretrain", "--no-progress", "--resume", *args, "model.dim=64"]) == 2
    assert "model.dim is 32" in capsys.readouterr().err
    assert main(["pretrain", "--no-progress", "--resume", *args, "model.renoise=ddim"]) == 0
    assert json.loads((tmp_path / "c" / "final" / "config.json").read_text())["config"]["renoise"] == "ddim"
    # a copy of the run, extended under a new out and export, leaves the original alone
    shutil.copytree(tmp_path / "c", tmp_path / "copy")
    before = (tmp_path / "c" / "final" / "model.safetensors").read_bytes()
    assert main(["pretrain", "--no-progress", "--resume", *args[:-1], "steps=3", f"out={tmp_path / 'copy'}",
                 f"export={tmp_path / 'exported'}"]) == 0
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert (tmp_path / "c" / "final" / "model.safetensors").read_bytes() == before
    assert main(["pretrain", "optim.lrr=1"]) == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_sample_cli_writes_what_eval_reads(tmp_path, capsys):
    torch.manual_seed(0)
    model = CausalVideoTransformer(load_config(PretrainConfig, None, TINY).model)
    model.save_pretrained(tmp_path / "student")
    (tmp_path / "prompts.txt").write_text("a small red ball falls on a black background\n# comment\n"
                                          "a large green square stays still on a navy background\n")
    assert main(["sample", "--checkpoint", str(tmp_path / "student"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--per-prompt", "2", "--seed", "3", "--out", str(tmp_path / "clips")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "clips" / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [3, 4, 3, 4] and all((tmp_path / "clips" / r["path"]).is_file() for r in rows)
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 4
    capsys.readouterr()
    assert main(["eval", "--videos", str(tmp_path / "clips"), "--json", str(tmp_path / "r.json")]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "student"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--guidance", "1.5", "--no-mp4", "--out", str(tmp_path / "guided")]) == 0
    guided = [json.loads(line)["path"] for line in (tmp_path / "guided" / "manifest.jsonl").read_text().splitlines()]
    assert len(guided) == 2 and (tmp_path / "guided" / guided[0]).is_file()
    assert main(["sample", "--checkpoint", str(tmp_path / "student"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--guidance", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--guidance must be > 0" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "student"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--first-guidance", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--first-guidance must be > 0" in capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_videos"] == 4
    assert main(["sample", "--checkpoint", str(tmp_path / "nope"), "--split", "physics-eval",
                 "--out", str(tmp_path / "x")]) == 2
    assert "no such student" in capsys.readouterr().err


def test_init_from_another_family(tmp_path):
    """A frame-wise run may start from chunk-wise weights; other shape changes are named errors."""
    src = tiny_cfg(tmp_path, "chunk", "steps=2")
    chunk_dir = pretrain(src, progress=False)
    cfg = tiny_cfg(tmp_path, "frame", "steps=1", "model.block_frames=1", f"init={chunk_dir}", "optim.lr=0")
    frame_dir = pretrain(cfg, progress=False)
    a = CausalVideoTransformer.from_pretrained(chunk_dir).state_dict()
    b = CausalVideoTransformer.from_pretrained(frame_dir)
    assert b.config.block_frames == 1
    # lr 0 and the EMA started at the init: the weights are the chunk-wise ones.
    assert all(torch.equal(a[k], v) for k, v in b.state_dict().items())
    bad = tiny_cfg(tmp_path, "bad", "steps=1", "model.dim=48", f"init={chunk_dir}")
    with pytest.raises(ValueError, match=r"init=.*model\.dim is 32 .* but 48"):
        pretrain(bad, progress=False)


def assert_same_predictions(a: CausalVideoTransformer, b: CausalVideoTransformer) -> None:
    """a and b predict exactly the same for a noised first block."""
    text = get_text_encoder().encode(["a small red ball falls on a black background"])
    c = a.config
    x = torch.randn(1, c.block_frames, c.channels, c.height, c.width, generator=torch.Generator().manual_seed(0))
    t = torch.full((1, c.block_frames), 0.7)
    with torch.no_grad():
        assert torch.equal(a(x, t, text)[0], b(x, t, text)[0])


def test_removed_knobs_load_only_at_their_old_value(tmp_path):
    """frame_cond (student) and trainable (pretraining) were removed: files that still name them at
    the value every shipped checkpoint and recipe used load; any other value is a named error."""
    from afd.config import config_from_dict

    assert config_from_dict(StudentConfig, {"frame_cond": False}) == StudentConfig()
    with pytest.raises(ValueError, match="frame_cond was removed; only frame_cond: False"):
        config_from_dict(StudentConfig, {"frame_cond": True})
    assert tiny_cfg(tmp_path, "ok", "trainable=all").out == tiny_cfg(tmp_path, "ok").out
    with pytest.raises(ValueError, match="trainable was removed; only trainable: 'all'"):
        tiny_cfg(tmp_path, "bad", "trainable=refine")


def test_init_adds_the_refinement_head_to_a_checkpoint_without_it(tmp_path):
    """init= adds the zero-initialised refinement head: the student starts out computing exactly
    what the checkpoint did, and training then moves the head."""
    src_dir = pretrain(tiny_cfg(tmp_path, "plain", "steps=2"), progress=False)
    a = CausalVideoTransformer.from_pretrained(src_dir)
    same = pretrain(tiny_cfg(tmp_path, "r0", "steps=1", "model.refine=4", f"init={src_dir}", "optim.lr=0"),
                    progress=False)
    b = CausalVideoTransformer.from_pretrained(same)
    assert_same_predictions(a, b)
    cfg = tiny_cfg(tmp_path, "r1", "steps=3", "model.refine=4", f"init={src_dir}",
                   "optim.lr=1e-2", "optim.warmup_steps=0", "ema_decay=0")
    trained = CausalVideoTransformer.from_pretrained(pretrain(cfg, progress=False)).state_dict()
    assert torch.count_nonzero(trained["refine.net.4.weight"]) > 0
