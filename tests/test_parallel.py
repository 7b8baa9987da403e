"""Training across ranks (afd.train.parallel, afd.dist): two gloo processes under torchrun, with DDP
and with FSDP2, take the one-step SGD update one process takes with the same global batch, within
float32 summation error; AdamW trains under each engine (FSDP2 with bf16 mixed precision too);
checkpoints are full tensors a single process resumes; activation checkpointing changes nothing;
LoRA checkpoints and adapters hold only the adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from afd import dist
from afd.cli import main
from afd.config import load_config
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.lora import add_lora, load_adapter, save_adapter
from afd.train.config import AdaptConfig
from train_util import make_tiny_student, tiny_args

ROOT = Path(__file__).resolve().parents[1]
# One run's settings: no judge and no strips (nothing but training), fp32 so that two ranks and
# one process differ only by float summation order.
QUIET = ("train.steps=2", "eval.judge=none", "eval.every=0", "eval.strip_prompts=0", "run.tensorboard=false",
         "train.device=cpu", "train.amp=false")


def torchrun(args: list[str], nproc: int = 2) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "afd", "train", "--no-progress", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def relative_gap(w0: dict, a: dict, b: dict) -> float:
    """||a - b|| / ||a - w0||: how far two runs' updates from w0 disagree, relative to the update."""
    assert a.keys() == b.keys()
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5
    den = sum(float((a[k] - w0[k]).pow(2).sum()) for k in a) ** 0.5
    assert den > 0, "the run did not move the student"
    return num / den


def weights(run: Path, name: str = "student") -> dict:
    return load_file(str(run / name / "model.safetensors"))


# Parity runs take one plain SGD step without weight decay, so that the update is -lr * gradient
# exactly and the runs differ only by how each engine sums the gradient. A large lr keeps the
# rounding of the weights themselves (u |w| per entry) far below the update it is compared with.
SGD_STEP = ("train.optimizer=sgd", "train.steps=1", "train.weight_decay=0", "disc.weight_decay=0",
            "train.lr=100", "disc.lr=0.1", "train.grad_clip=1e9", "disc.grad_clip=1e9")
U = 2.0 ** -24  # float32 unit roundoff


def summation_tolerance(terms: int, kappa: float = 1.0) -> float:
    """Relative error bound of a float32 gradient summed in any order over ``terms`` per-token
    contributions: the worst case of recursive summation, terms * u (Higham, Accuracy and Stability
    of Numerical Algorithms, 2002, eq. 4.4), times the sum's condition number ``kappa``
    (sum of |terms| over |sum|). Engines and CPU kernels (ATEN_CPU_CAPABILITY) change only the
    order, so their updates must agree within it."""
    return terms * U * kappa


def nft_condition(run: Path) -> float:
    """The NFT gradient's condition number at its first step: each rollout's term carries the factor
    (2 w - 1), so with weights w = 1/2 +- s (s the logged weight spread) the terms cancel to about
    1 / (2 s) of their size. 1 for methods that log no weights."""
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return max(1.0, 1.0 / (2.0 * row["weight_std"])) if row.get("weight_std") else 1.0


def check_parity(base: Path, runs: dict[str, Path], terms: int) -> None:
    """One process, DDP and FSDP2 (fp32) give the same one-step update of the student, and the same
    discriminator (whose gradients are averaged explicitly; compared relative to its weights), within
    the summation bound."""
    tol = summation_tolerance(terms, nft_condition(runs["one"]))
    w0 = load_file(str(base / "model.safetensors"))
    one = weights(runs["one"])
    for name in ("ddp", "fsdp2"):
        gap = relative_gap(w0, one, weights(runs[name]))
        assert gap < tol, f"{name}: student update differs from one process by {gap:.2e} (bound {tol:.2e})"
    d_one = weights(runs["one"], "disc")
    for name in ("ddp", "fsdp2"):
        d = weights(runs[name], "disc")
        num = sum(float((d_one[k] - d[k]).pow(2).sum()) for k in d) ** 0.5
        den = sum(float(d_one[k].pow(2).sum()) for k in d) ** 0.5
        assert num / den < tol, f"{name}: discriminator differs from one process by {num / den:.2e} (bound {tol:.2e})"


def tokens_per_update(student: Path, clips: int) -> int:
    """Per-token terms summed into each gradient entry by one update: clips x frames x tokens per frame."""
    cfg = json.loads((student / "config.json").read_text())["config"]
    if "patch_size" in cfg:  # the Wan student: (frames, height, width) patch
        _, ph, pw = cfg["patch_size"]
        return clips * cfg["frames"] * (cfg["height"] // ph) * (cfg["width"] // pw)
    return clips * cfg["frames"] * (cfg["height"] // cfg["patch"]) * (cfg["width"] // cfg["patch"])


@pytest.mark.parity
@pytest.mark.parametrize("method", ["gan", "afd"])
def test_builtin_student_two_ranks_ddp_and_fsdp2_match_one_process(tmp_path, method):
    """GAN trains the student through its rollouts and the discriminator; AFD trains the student
    on NFT-weighted noised rollouts."""
    student = make_tiny_student(tmp_path / "student")
    cache = tmp_path / "cache"
    runs = {k: tmp_path / k for k in ("one", "ddp", "fsdp2")}
    args = lambda run, *extra: tiny_args(student, run, cache, *QUIET, *SGD_STEP, f"train.method={method}", *extra)  # noqa: E731
    assert main(["train", "--no-progress", *args(runs["one"])]) == 0
    torchrun(args(runs["ddp"], "dist.strategy=ddp"))
    torchrun(args(runs["fsdp2"], "dist.strategy=fsdp2", "dist.mixed_precision=none"))
    check_parity(student, runs, tokens_per_update(student, clips=4))


def test_builtin_student_adamw_steps_under_each_engine_and_resume(tmp_path):
    """AdamW under DDP and under FSDP2 with its default bf16 mixed precision: the runs train (the
    student moves, stays finite), and the sharded run's checkpoint holds full tensors in the
    one-process layout, which a single process resumes (strategy and rank count may change)."""
    student = make_tiny_student(tmp_path / "student")
    cache = tmp_path / "cache"
    runs = {k: tmp_path / k for k in ("ddp", "fsdp2")}
    args = lambda run, *extra: tiny_args(student, run, cache, *QUIET, *extra)  # noqa: E731
    torchrun(args(runs["ddp"], "dist.strategy=ddp"))
    out = torchrun(args(runs["fsdp2"], "dist.strategy=fsdp2"))
    assert "returned a view tensor" not in out  # FSDP2's warning: an in-place op would skip the all-gather
    w0 = load_file(str(student / "model.safetensors"))
    for run in runs.values():
        w = weights(run)
        assert all(torch.isfinite(v).all() for v in w.values())
        assert sum(float((w[k] - w0[k]).abs().max()) for k in w) > 0

    ckpt = runs["fsdp2"] / "checkpoint"
    shapes = {k: v.shape for k, v in load_file(str(ckpt / "student.safetensors")).items()}
    assert shapes == {k: v.shape for k, v in weights(runs["fsdp2"]).items()}
    moments = load_file(str(ckpt / "optim-student.safetensors"))
    assert sorted({v.shape for k, v in moments.items() if k.endswith("exp_avg")}) == sorted(
        {v.shape for v in weights(runs["fsdp2"]).values()})
    assert main(["train", "--no-progress", "--resume", *args(runs["fsdp2"], "train.steps=3")]) == 0
    rows = [json.loads(line) for line in (runs["fsdp2"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parity
def test_gan_under_ddp_shares_the_exit_steps(tmp_path):
    """GAN backpropagates through several forwards of a rollout, one random step per block: every
    rank must take the same steps (broadcast from rank 0) for DDP's collectives to line up, and the
    update is then one process's."""
    student = make_tiny_student(tmp_path / "student")
    cache = tmp_path / "cache"
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    assert main(["train", "--no-progress", *tiny_args(student, one, cache, *QUIET, *SGD_STEP, "train.method=gan")]) == 0
    torchrun(tiny_args(student, ddp, cache, *QUIET, *SGD_STEP, "train.method=gan", "dist.strategy=ddp"))
    w0 = load_file(str(student / "model.safetensors"))
    assert relative_gap(w0, weights(one), weights(ddp)) < summation_tolerance(tokens_per_update(student, clips=4))


@pytest.mark.slow
@pytest.mark.parity
def test_lora_under_ddp_and_fsdp2_with_activation_checkpointing(tmp_path):
    """The real recipe's setting (LoRA, FSDP2, checkpointing): one SGD step of the adapters is the
    same under one process, DDP and FSDP2, and only the adapters are saved beside the student."""
    student = make_tiny_student(tmp_path / "student")
    cache = tmp_path / "cache"
    runs = {k: tmp_path / k for k in ("one", "ddp", "fsdp2")}
    args = lambda run, *extra: tiny_args(student, run, cache, *QUIET, *SGD_STEP, "student.lora_rank=2", *extra)  # noqa: E731
    assert main(["train", "--no-progress", *args(runs["one"])]) == 0
    torchrun(args(runs["ddp"], "dist.strategy=ddp"))
    torchrun(args(runs["fsdp2"], "dist.strategy=fsdp2", "dist.mixed_precision=none",
                  "dist.activation_checkpointing=true"))
    check_parity(student, runs, tokens_per_update(student, clips=4))
    assert (runs["fsdp2"] / "adapter" / "adapter.safetensors").is_file()


@pytest.mark.parity
def test_wan_student_two_ranks_ddp_and_fsdp2_match_one_process(tmp_path):
    """The Wan student's one-step SGD update is the same under one process, DDP and FSDP2 (fp32)."""
    pytest.importorskip("diffusers")
    from wan_util import save_tiny_wan

    paths = save_tiny_wan(tmp_path / "tiny-wan")
    runs = {k: tmp_path / k for k in ("one", "ddp", "fsdp2")}
    common = [*wan_args(paths, tmp_path / "cache"), *SGD_STEP]
    assert main(["train", "--no-progress", *common, f"run.dir={runs['one']}"]) == 0
    torchrun([*common, f"run.dir={runs['ddp']}", "dist.strategy=ddp"])
    torchrun([*common, f"run.dir={runs['fsdp2']}", "dist.strategy=fsdp2", "dist.mixed_precision=none"])
    check_parity(Path(paths["student"]), runs, tokens_per_update(Path(paths["student"]), clips=4))


# Shipped configs whose dist section names a strategy (today: the Self-Forcing recipe).
STRATEGY_CONFIGS = sorted(p.name for p in (ROOT / "configs" / "train").glob("*.yaml") if "strategy:" in p.read_text())


@pytest.mark.parametrize("config", STRATEGY_CONFIGS)
def test_wan_student_trains_under_the_dist_setting_of_each_shipped_config(tmp_path, config):
    """The tiny Wan student under the ``dist`` section of every shipped config that names a strategy
    (FSDP2 with bf16 mixed precision and activation checkpointing) takes AdamW steps on two ranks."""
    pytest.importorskip("diffusers")
    from wan_util import save_tiny_wan

    dist_cfg = load_config(AdaptConfig, ROOT / "configs" / "train" / config).dist
    paths = save_tiny_wan(tmp_path / "tiny-wan")
    run = tmp_path / "run"
    torchrun([*wan_args(paths, tmp_path / "cache"), f"run.dir={run}", f"dist.strategy={dist_cfg.strategy}",
              f"dist.mixed_precision={dist_cfg.mixed_precision}",
              f"dist.activation_checkpointing={str(dist_cfg.activation_checkpointing).lower()}"])
    w0, w = load_file(str(Path(paths["student"]) / "model.safetensors")), weights(run)
    assert all(torch.isfinite(v).all() for v in w.values())
    assert sum(float((w[k] - w0[k]).abs().max()) for k in w) > 0


def wan_args(paths: dict, cache: Path) -> list[str]:
    return ["--config", str(ROOT / "configs" / "train" / "afd-wan-tiny.yaml"), f"student.checkpoint={paths['student']}",
            f"teacher.cache_dir={cache}", *QUIET]


def test_activation_checkpointing_changes_no_number(tmp_path):
    student = make_tiny_student(tmp_path / "student")
    cache = tmp_path / "cache"
    for name, flag in (("plain", "false"), ("ckpt", "true")):
        assert main(["train", "--no-progress", *tiny_args(student, tmp_path / name, cache, *QUIET,
                                                          f"dist.activation_checkpointing={flag}")]) == 0
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "ckpt")
    assert a.keys() == b.keys()  # parameter names unchanged by the checkpoint wrapper
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


def test_rank_shares_and_global_draws():
    items = list(range(8))
    assert [dist.shard(items, r, 2) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="evenly"):
        dist.shard(items, 0, 3)
    # One process: exactly the plain draw (runs on one process keep their numbers).
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(dist.rank_rows(lambda n: torch.randn(n, 3, generator=g1), 4),
                               torch.randn(4, 3, generator=g2), rtol=0, atol=0)
    assert dist.broadcast_ints([3, 1]) == [3, 1]


def test_lora_checkpoint_holds_only_the_adapters_and_resumes(tmp_path):
    student = make_tiny_student(tmp_path / "student")
    run = tmp_path / "run"
    args = tiny_args(student, run, tmp_path / "cache", *QUIET, "student.lora_rank=2", "train.steps=1")
    assert main(["train", "--no-progress", *args]) == 0
    for name in ("student", "old"):
        keys = load_file(str(run / "checkpoint" / f"{name}.safetensors")).keys()
        assert keys and all("lora_" in k for k in keys), name
    assert main(["train", "--no-progress", "--resume", *args[:-1], "train.steps=2"]) == 0
    # The adapters alone, next to the merged student, put back onto the base give the merged student.
    base = CausalVideoTransformer.from_pretrained(student)
    load_adapter(base, run / "adapter")
    merged = CausalVideoTransformer.from_pretrained(run / "student")
    x = torch.randn(1, base.config.frames, base.config.channels, base.config.height, base.config.width)
    from afd.text.encoder import TextEncoding

    text = TextEncoding(tokens=torch.randn(1, 3, base.config.text_dim), mask=torch.ones(1, 3, dtype=torch.bool),
                        pooled=torch.randn(1, base.config.text_dim))
    t = torch.full((1, base.config.frames), 0.5)
    with torch.no_grad():
        torch.testing.assert_close(base.forward_train(x, x, t, text), merged.forward_train(x, x, t, text),
                                   atol=1e-5, rtol=1e-5)


def test_adapter_folder_errors(tmp_path):
    model = CausalVideoTransformer.from_pretrained(make_tiny_student(tmp_path / "student"))
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_adapter(model, tmp_path / "a")
    add_lora(model, 2, 4.0)
    out = save_adapter(model, tmp_path / "a")
    meta = json.loads((out / "adapter_config.json").read_text())
    assert (meta["rank"], meta["alpha"]) == (2, 4.0)
    with pytest.raises(ValueError, match="already has LoRA"):
        load_adapter(model, out)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(CausalVideoTransformer.from_pretrained(tmp_path / "student"), tmp_path / "nowhere")
