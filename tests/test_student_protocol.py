"""The student seam: backbones load through one registry and travel as a ``Student`` bundle."""

from __future__ import annotations

import json

import pytest
import torch

from afd.student import base
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.base import Student, load_student_model
from afd.student.lora import add_lora
from afd.video.core import VideoFormat
from train_util import make_tiny_student


def test_shipped_and_saved_students_load_through_the_registry(tmp_path):
    model = load_student_model("base-state")
    assert isinstance(model, CausalVideoTransformer) and not model.training
    s = Student.load("base-state")
    assert s.codec.name == "state" and s.fmt == VideoFormat(frames=16, height=32, width=32, fps=8.0)
    assert s.encode_text(["a ball"]).tokens.shape[-1] == s.text.dim == model.config.text_dim
    tiny = Student.load(make_tiny_student(tmp_path / "tiny"))
    assert tiny.codec.name == "pixel" and tiny.fmt.height == 32 and tiny.device == torch.device("cpu")


def test_an_unknown_format_tag_names_the_file(tmp_path):
    d = make_tiny_student(tmp_path / "tiny")
    meta = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**meta, "format": "someone-elses-model"}))
    with pytest.raises(ValueError, match=r"config.json: format 'someone-elses-model' is not a known student"):
        load_student_model(d)


class Mirrored(CausalVideoTransformer):
    """Another backbone behind the same protocol (here: the same network under its own format tag)."""

    FORMAT = "test-mirrored"


def test_a_registered_backbone_loads_and_takes_lora(tmp_path, monkeypatch):
    monkeypatch.setitem(base.STUDENT_FORMATS, "test-mirrored", f"{__name__}:Mirrored")
    src = CausalVideoTransformer.from_pretrained(make_tiny_student(tmp_path / "tiny"))
    m = Mirrored(src.config)
    m.load_state_dict(src.state_dict())
    m.save_pretrained(tmp_path / "mirrored" / "model")
    loaded = load_student_model(tmp_path / "mirrored" / "model")
    assert type(loaded) is Mirrored
    targets = loaded.lora_target_modules()
    assert targets and all(t.startswith("layers.") for t in targets)
    add_lora(loaded, 2, 4.0)
    trainable = [n for n, p in loaded.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_a_text_width_the_encoder_does_not_give_is_an_error(tmp_path):
    d = make_tiny_student(tmp_path / "tiny", text_dim=128)
    with pytest.raises(ValueError, match="reads 128-dim text but the encoder"):
        Student.load(d)


def test_the_discriminator_must_read_what_the_student_draws(tmp_path):
    from afd.disc.config import DiscConfig
    from afd.train.build import check_disc_fits

    s = Student.load(make_tiny_student(tmp_path / "tiny"))
    check_disc_fits(DiscConfig(), s)  # 16 frames of 32x32, MiniLM's 384-dim text
    with pytest.raises(ValueError, match=r"set disc.model.frames=16 disc.model.size=32 disc.model.text_dim=384"):
        check_disc_fits(DiscConfig(frames=13, text_dim=16), s)
    # With resize, D takes any frame size: only frames and text width are checked.
    check_disc_fits(DiscConfig(size=64, resize=True), s)
    with pytest.raises(ValueError, match=r"set disc.model.frames=16 disc.model.text_dim=384$"):
        check_disc_fits(DiscConfig(frames=13, size=64, resize=True), s)
