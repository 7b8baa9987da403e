"""``afd probe-disc``: the offline discriminator benchmark runs end to end over seeds, judges
prompts and rollouts D never trained on, is reproducible from its cache, prints its table, and
rejects impossible splits with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from afd.cli import main


def _args(tiny_student, tmp_path, out, *extra):
    return ["probe-disc", "--config", "configs/train/afd.yaml", "--out", str(out), "--prompts", "4",
            "--rollouts", "4", "--iters", "2", "--every", "1", "--seeds", "0,1",
            "--cache", str(tmp_path / "probe-cache"), f"student.checkpoint={tiny_student}",
            f"teacher.cache_dir={tmp_path / 'teacher'}", "train.prompts=2", "train.rollouts=2",
            "disc.model.width=4", "disc.model.hidden=16", "disc.lr=1e-3", *extra]


def test_probe_runs_and_repeats_from_its_cache(tiny_student, tmp_path, capsys):
    assert main(_args(tiny_student, tmp_path, tmp_path / "a")) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "seed0" / "probe.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0 <= r["acc"] <= 1 and 0 <= r["r_phi"] <= 1 and 0 <= r["r_phi_p10"] <= r["r_phi_p90"] <= 1
        assert 0 <= r["sat"] <= 1
        for k in ("oracle", "pc", "within", "train_oracle", "cue_steady_motion"):
            assert r[k] is None or -1 <= r[k] <= 1
        assert r["lift"] is None or r["lift"] <= r["lift_max"] + 1e-9  # the pick is bounded by the best
    assert len(list((tmp_path / "probe-cache").glob("*.safetensors"))) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["seeds"] == [0, 1] and set(last) >= {"oracle", "oracle_se", "pc", "within", "acc", "s_per_iter"}
    # a second run reads the cached rollouts and, with the same seeds, judges identically
    assert main(_args(tiny_student, tmp_path, tmp_path / "b")) == 0
    again = [json.loads(line) for line in (tmp_path / "b" / "seed0" / "probe.jsonl").read_text().splitlines()]
    drop = ("t_train", "t_score")
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["disc"]["lr"] == 1e-3 and (tmp_path / "b" / "seed1" / "config.yaml").exists()
    assert main(["probe-disc", "--table", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    tab = capsys.readouterr().out
    assert f"| {tmp_path.name}/a | 2 |" in tab and f"| {tmp_path.name}/b | 2 |" in tab
    assert "| pick lift (max) |" in tab


def test_probe_holds_out_other_prompts_and_seeds():
    from afd.probes.disc import split_prompts

    for seed in range(3):
        train, held = split_prompts(200, 50, seed)
        assert len(held) == 50 and not set(train) & set(held) and sorted([*train, *held]) == list(range(200))
    assert not np.array_equal(split_prompts(200, 50, 0)[1], split_prompts(200, 50, 1)[1])
    with pytest.raises(ValueError, match="held-prompts"):
        split_prompts(4, 4, 0)


def test_probe_with_loose_negatives(tiny_student, tmp_path):
    assert main(_args(tiny_student, tmp_path, tmp_path / "b")) == 0
    assert main(_args(tiny_student, tmp_path, tmp_path / "l", "--negatives", "loose")) == 0
    (loose,) = (tmp_path / "probe-cache").glob("*-loose.safetensors")
    (base,) = set((tmp_path / "probe-cache").glob("*.safetensors")) - {loose}
    lo, ba = load_file(loose)["rollouts"], load_file(base)["rollouts"]
    # training rollouts (0, 1 of 4) are replaced by world clips; the held-out ones stay the base's
    assert torch.equal(lo[:, 2:], ba[:, 2:])
    assert not torch.equal(lo[:, :2], ba[:, :2])


@pytest.mark.parametrize("extra, message", [
    (("--rollouts", "3"), "even number"),
    (("--rollouts", "2"), "even number >= 4"),
    (("train.rollouts=3",), "exceeds the 2 training rollouts"),
])
def test_probe_rejects_impossible_rollout_splits(tiny_student, tmp_path, capsys, extra, message):
    args = _args(tiny_student, tmp_path, tmp_path / "x")
    if extra[0] == "--rollouts":
        i = args.index("--rollouts")
        args[i + 1] = extra[1]
    else:
        args += list(extra)
    assert main(args) == 2
    assert message in capsys.readouterr().err
