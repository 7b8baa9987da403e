"""``train.device``: auto | cpu | cuda | cuda:N, and what follows from it."""

from __future__ import annotations

import pytest
import torch

from afd import device as afd_device
from afd.cli import main
from afd.device import autocast, describe_precision, device_of, dist_backend, resolve_amp, resolve_device
from train_util import tiny_args


def test_resolve_device_and_backend():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert dist_backend(torch.device("cpu")) == "gloo" and dist_backend(torch.device("cuda", 0)) == "nccl"
    for bad in ("gpu", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_a_missing_cuda_device_is_one_clear_line(tiny_student, tmp_path, capsys):
    with pytest.raises(ValueError, match="device=cuda:1 was requested but"):
        resolve_device("cuda:1")
    code = main(["train", "--no-progress", *tiny_args(tiny_student, tmp_path / "run", tmp_path / "cache"),
                 "train.device=cuda", "train.steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "device=cuda was requested" in err
    assert not (tmp_path / "run").exists()  # nothing built, nothing written


def test_autocast_follows_the_module_device():
    layer = torch.nn.Linear(4, 4)
    assert device_of(layer) == torch.device("cpu") and device_of(torch.nn.ReLU()) == torch.device("cpu")
    with autocast(layer, True):
        assert torch.is_autocast_enabled("cpu") and layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast(layer, False):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


@pytest.mark.parametrize("features", [[], ["avx512_bf16"], ["amx_bf16", "avx512_bf16"]])
def test_amp_auto_autocasts_only_where_the_cpu_computes_bf16(monkeypatch, features):
    """amp=auto: bf16 autocast on a CPU with AMX or AVX512-BF16, fp32 on one that would emulate it;
    true and false mean what they say on any CPU, and the log line names the reason."""
    monkeypatch.setattr(afd_device, "cpu_bf16_features", lambda: features)
    cpu, layer = torch.device("cpu"), torch.nn.Linear(4, 4)
    assert resolve_amp("auto", cpu) is bool(features)
    assert resolve_amp(True, cpu) is True and resolve_amp(False, cpu) is False
    with autocast(layer, "auto"):
        assert layer(torch.ones(1, 4)).dtype == (torch.bfloat16 if features else torch.float32)
    line = describe_precision("auto", cpu)
    assert line.startswith("bf16 autocast" if features else "fp32")
    assert ("emulated" in line) is not bool(features)
    with pytest.raises(ValueError, match="amp must be true, false or auto"):
        resolve_amp("yes", cpu)


def test_cpu_bf16_features_reads_this_machine():
    feats = afd_device.cpu_bf16_features()
    assert set(feats) <= {"amx_bf16", "avx512_bf16"}


def test_device_cpu_and_auto_train_the_same_student_on_cpu(tiny_student, tmp_path):
    """On a CPU machine ``auto`` is ``cpu``: the same seed gives the same weights either way."""
    from afd.io_utils import load_safetensors

    if torch.cuda.is_available():
        pytest.skip("auto is cuda here")
    out = {}
    for dev in ("cpu", "auto"):
        args = tiny_args(tiny_student, tmp_path / dev, tmp_path / "cache", f"train.device={dev}", "train.steps=1",
                         "eval.judge=none", "eval.strip_prompts=0")
        assert main(["train", "--no-progress", *args]) == 0
        out[dev] = load_safetensors(tmp_path / dev / "student" / "model.safetensors")
    assert out["cpu"].keys() == out["auto"].keys()
    assert all(torch.equal(out["cpu"][k], out["auto"][k]) for k in out["cpu"])
