"""Importing Self-Forcing / Causal-Forcing checkpoints (afd.student.backbones.wan_import, ``afd student
import``) on tiny random Wan students saved in those projects' layout: every tensor arrives,
the EMA choice, wrapper prefixes, and one-line errors naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from afd.cli import main
from afd.student.backbones.wan_config import WanStudentConfig
from afd.student.base import load_student_model

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here needs the hub; make sure nothing reaches it

TINY = dict(channels=4, height=8, width=8, frames=4, block_frames=2, heads=2, head_dim=8, layers=2, ffn_dim=32,
            text_dim=16, freq_dim=16, rope_max_seq_len=16)


@pytest.fixture(scope="module")
def wi():
    pytest.importorskip("diffusers")
    import afd.student.backbones.wan_import as wi

    return wi


def tiny_config(**kw) -> WanStudentConfig:
    return WanStudentConfig(**{**TINY, **kw})


def random_student(wi, seed: int, **kw):
    """A tiny student whose every weight is random (none at its init value of 1 or 0)."""
    torch.manual_seed(seed)
    model = wi.CausalWanStudent(tiny_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def wrapped(wi, model, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The model's weights as WanDiffusionWrapper saves them: ``model.`` + original Wan names."""
    return {prefix + k: v.clone() for k, v in wi.to_original_wan_keys(model.state_dict()).items()}


def save_checkpoint(path: Path, **states) -> Path:
    torch.save(states, path)
    return path


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def one_line_error(excinfo, path: Path, *parts: str):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    for part in parts:
        assert part in msg, msg


# ----- the key mapping -----

# Self-Forcing's CausalWanModel (wan/modules/causal_model.py), written out from its module tree:
# norm1 / norm2 have no weights, norm3 is the affine cross-attention norm, ffn is Sequential(0, 2).
BLOCK_PARAMS = [f"{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")] + \
    [f"{a}.{n}.weight" for a in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")] + \
    ["norm3.weight", "norm3.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias", "modulation"]
TOP_PARAMS = ["patch_embedding.weight", "patch_embedding.bias", "head.head.weight", "head.head.bias",
              "head.modulation", "time_projection.1.weight", "time_projection.1.bias"] + \
    [f"{m}.{i}.{w}" for m in ("text_embedding", "time_embedding") for i in (0, 2) for w in ("weight", "bias")]


def test_keys_map_to_the_original_wan_names_and_back(wi):
    model = random_student(wi, 0)
    original = wi.to_original_wan_keys(model.state_dict())
    assert set(original) == set(TOP_PARAMS) | {f"blocks.{i}.{p}" for i in range(2) for p in BLOCK_PARAMS}
    assert tuple(original["head.modulation"].shape) == (1, 2, 16)
    assert tuple(original["blocks.1.modulation"].shape) == (1, 6, 16)
    back, origin = wi.to_diffusers_keys(original)
    assert set(back) == set(model.state_dict())
    assert origin["transformer.blocks.1.norm2.weight"] == "blocks.1.norm3.weight"
    assert origin["transformer.blocks.0.attn2.to_out.0.bias"] == "blocks.0.cross_attn.o.bias"
    with pytest.raises(ValueError, match="'transformer.rope.freqs_cos' is not a parameter of a Wan T2V transformer"):
        wi.to_original_wan_keys({"transformer.rope.freqs_cos": torch.zeros(1)})


# ----- loading -----


@pytest.mark.parametrize("loader", ["load_self_forcing_checkpoint", "load_causal_forcing_checkpoint"])
def test_every_tensor_arrives_and_ema_picks_generator_ema(wi, tmp_path, loader):
    raw, ema = random_student(wi, 1), random_student(wi, 2)
    path = save_checkpoint(tmp_path / "ckpt.pt", generator=wrapped(wi, raw), generator_ema=wrapped(wi, ema),
                           critic={"model.head.head.weight": torch.zeros(3)})
    load = getattr(wi, loader)
    got_ema = load(path, tiny_config())
    got_raw = load(path, tiny_config(), ema=False)
    assert type(got_ema) is wi.CausalWanStudent and not got_ema.training
    assert_same_weights(got_ema, ema)
    assert_same_weights(got_raw, raw)
    # The same network, not only the same tensors: one teacher-forced pass agrees exactly.
    from afd.text.encoder import TextEncoding

    torch.manual_seed(3)
    x0, xt = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 4, 4, 8, 8)
    t = torch.tensor([[0.3, 0.3, 0.8, 0.8]])
    text = TextEncoding(tokens=torch.randn(1, 3, 16), mask=torch.ones(1, 3, dtype=torch.bool),
                        pooled=torch.randn(1, 16))
    with torch.no_grad():
        assert torch.equal(got_ema.forward_train(x0, xt, t, text), ema.eval().forward_train(x0, xt, t, text))


def test_fsdp_checkpoint_and_compile_segments_are_stripped(wi, tmp_path):
    """Causal-Forcing's EMA names come from the FSDP module's named_parameters:
    ``model._fsdp_wrapped_module.blocks...``, and nested wrappers can add more segments."""
    ema = random_student(wi, 4)
    state = {}
    for k, v in wrapped(wi, ema).items():
        k = k.replace("model.", "model._fsdp_wrapped_module.", 1)
        k = k.replace("blocks.1.", "blocks.1._fsdp_wrapped_module._checkpoint_wrapped_module._orig_mod.")
        state[k] = v.to(torch.bfloat16)  # a saved bf16 copy is cast into the float32 model
    path = save_checkpoint(tmp_path / "cf.pt", generator_ema=state)
    got = wi.load_causal_forcing_checkpoint(path, tiny_config())
    for k, v in ema.state_dict().items():
        assert torch.equal(got.state_dict()[k], v.to(torch.bfloat16).float()), k


# ----- one-line errors naming the file -----


def test_an_extra_or_missing_key_is_one_error(wi, tmp_path):
    model = random_student(wi, 5)
    extra = {**wrapped(wi, model), "model.blocks.0.self_attn.extra.weight": torch.zeros(2)}
    path = save_checkpoint(tmp_path / "extra.pt", generator_ema=extra)
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(path, tiny_config())
    one_line_error(e, path, "Self-Forcing weights do not fit the config",
                   "unexpected 1: blocks.0.self_attn.extra.weight")
    assert "missing" not in str(e.value).replace(str(path), "") and "sizes" not in str(e.value)

    missing = wrapped(wi, model)
    del missing["model.blocks.1.cross_attn.k.weight"], missing["model.head.modulation"]
    path = save_checkpoint(tmp_path / "missing.pt", generator_ema=missing)
    with pytest.raises(ValueError) as e:
        wi.load_causal_forcing_checkpoint(path, tiny_config())
    one_line_error(e, path, "Causal-Forcing weights", "missing 2: blocks.1.cross_attn.k.weight, head.modulation")


def test_a_config_that_does_not_fit_names_key_and_shapes(wi, tmp_path):
    path = save_checkpoint(tmp_path / "sf.pt", generator_ema=wrapped(wi, random_student(wi, 6)))
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(path, tiny_config(ffn_dim=48))
    one_line_error(e, path, "blocks.0.ffn.0.weight (transformer.blocks.0.ffn.net.0.proj.weight) has shape (32, 16) "
                            "in the file, the config expects (48, 16)",
                   "the file's sizes: layers=2 dim=16 channels=4 ffn_dim=32")
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(path, tiny_config(layers=3))
    one_line_error(e, path, "missing 27: blocks.2.", "and 23 more", "layers=2", "the config's: layers=3")


def test_a_missing_state_is_one_error_listing_what_is_there(wi, tmp_path):
    path = save_checkpoint(tmp_path / "chunkwise.pt", generator=wrapped(wi, random_student(wi, 7)))
    with pytest.raises(ValueError) as e:
        wi.load_causal_forcing_checkpoint(path, tiny_config())
    one_line_error(e, path, "no 'generator_ema' state in this Causal-Forcing checkpoint; it holds ['generator']",
                   "--no-ema")
    path = save_checkpoint(tmp_path / "ema-only.pt", generator_ema=wrapped(wi, random_student(wi, 7)))
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(path, tiny_config(), ema=False)
    one_line_error(e, path, "no 'generator' state", "it holds ['generator_ema']")


class NotATensor:
    pass


def test_only_weights_are_unpickled(wi, tmp_path):
    path = save_checkpoint(tmp_path / "pickled.pt", generator_ema={"x": NotATensor()})
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(path, tiny_config())
    one_line_error(e, path, "cannot be read as a weights-only torch checkpoint")
    torch.save(torch.zeros(2), tmp_path / "bare.pt")
    with pytest.raises(ValueError) as e:
        wi.load_self_forcing_checkpoint(tmp_path / "bare.pt", tiny_config())
    one_line_error(e, tmp_path / "bare.pt", "expected a dict of state dicts as Self-Forcing saves, got Tensor")


# ----- afd student import -----


def test_cli_import_writes_a_loadable_student(wi, tmp_path, capsys):
    raw, ema = random_student(wi, 8, block_frames=1), random_student(wi, 9, block_frames=1)
    path = save_checkpoint(tmp_path / "framewise.pt", generator=wrapped(wi, raw), generator_ema=wrapped(wi, ema))
    config = tmp_path / "wan_student.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in {**TINY, "block_frames": 1}.items()))

    out = tmp_path / "student"
    assert main(["student", "import", "--from", "causal-forcing", "--checkpoint", str(path), "--config", str(config),
                 "--out", str(out)]) == 0
    assert "from the 'generator_ema' weights" in capsys.readouterr().out
    loaded = load_student_model(out)
    assert loaded.config == tiny_config(block_frames=1)
    assert_same_weights(loaded, ema)
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "afd-wan-student"
    assert meta["extra"]["imported_from"] == {"source": "causal-forcing", "checkpoint": str(path),
                                              "state": "generator_ema"}

    # --preset: WanStudentConfig's defaults, here overridden down to the tiny sizes; --no-ema.
    out2 = tmp_path / "student-raw"
    overrides = [f"{k}={v}" for k, v in {**TINY, "block_frames": 1}.items()]
    assert main(["student", "import", "--from", "self-forcing", "--checkpoint", str(path), "--preset", "wan2.1-1.3b",
                 "--no-ema", "--out", str(out2), *overrides]) == 0
    assert_same_weights(load_student_model(out2), raw)


def test_cli_import_errors_are_one_line(wi, tmp_path, capsys):
    path = save_checkpoint(tmp_path / "raw-only.pt", generator=wrapped(wi, random_student(wi, 10)))
    tiny = [f"{k}={v}" for k, v in TINY.items()]
    base = ["student", "import", "--from", "self-forcing", "--checkpoint", str(path), "--preset", "wan2.1-1.3b"]
    assert main([*base, "--out", str(tmp_path / "a"), *tiny]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("afd student: error: ") and "raw-only.pt: no 'generator_ema'" in err
    assert not (tmp_path / "a").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    assert main([*base, "--no-ema", "--out", str(busy), *tiny]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main([*base, "--no-ema", "--out", str(tmp_path / "b"), *tiny, "layers=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing 27" in err
    assert main([*base[:5], str(tmp_path / "nope.pt"), *base[6:], "--out", str(tmp_path / "c")]) == 2
    assert "nope.pt: no such file" in capsys.readouterr().err
