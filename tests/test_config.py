from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from afd.config import (
    ConfigError,
    apply_overrides,
    check_choices,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


# Module level, not inside tests: get_type_hints resolves the string annotations against the
# module's globals.
@dataclass
class ModelCfg:
    dim: int = 128
    depth: int = 4
    dropout: float = 0.0
    channels: list[int] = field(default_factory=lambda: [1, 2, 4])

    def __post_init__(self):
        if self.dim % 2:
            raise ValueError(f"dim must be even, got {self.dim}")


@dataclass
class OptimCfg:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: list[float] = field(default_factory=list)
    kind: Literal["adamw", "sgd"] = "adamw"


@dataclass
class EvalCfg:
    every: int = 1000
    prompts: list[str] = field(default_factory=lambda: ["a ball falls"])


@dataclass
class RunCfg:
    name: str = "run"
    seed: int = 0
    amp: bool = True
    resume: str | None = None
    max_grad_norm: float | None = 1.0
    out_dir: Path = Path("runs")
    tags: tuple[str, ...] = ()
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    eval: EvalCfg | None = field(default_factory=EvalCfg)


@dataclass
class NeedsData:
    root: str
    batch: int = 8


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(match: str):
    return pytest.raises(ConfigError, match=re.escape(match))


# -- layering -----------------------------------------------------------------------------


def test_defaults():
    cfg = load_config(RunCfg)
    assert cfg == RunCfg()
    assert isinstance(cfg.model, ModelCfg) and cfg.eval == EvalCfg()


def test_file_then_overrides_precedence(tmp_path):
    path = write(tmp_path, "seed: 1\nmodel:\n  dim: 256\n  depth: 8\noptim:\n  lr: 1e-3\n")
    cfg = load_config(RunCfg, path, ["model.dim=512", "seed=2", "seed=3"])
    assert cfg.model.dim == 512  # command line beats file
    assert cfg.model.depth == 8  # file beats default, and the section was merged, not replaced
    assert cfg.model.channels == [1, 2, 4]  # untouched default
    assert cfg.optim.lr == 1e-3
    assert cfg.seed == 3  # last override wins
    assert cfg.name == "run"


def test_empty_file_and_str_path(tmp_path):
    path = write(tmp_path, "# nothing here\n")
    assert load_config(RunCfg, str(path)) == RunCfg()


def test_nested_overrides():
    cfg = load_config(RunCfg, None, ["optim.betas=[0.8, 0.9]", "eval.every=0", "optim.kind=sgd"])
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.eval.every == 0
    assert cfg.optim.kind == "sgd"


def test_optional_section_off_and_back_on():
    assert load_config(RunCfg, None, ["eval=null"]).eval is None
    # Setting a key in a switched-off section turns it back on from its defaults.
    cfg = load_config(RunCfg, None, ["eval=null", "eval.every=5"])
    assert cfg.eval == EvalCfg(every=5)


def test_section_as_mapping_override():
    cfg = load_config(RunCfg, None, ["model={dim: 64, depth: 2}"])
    assert (cfg.model.dim, cfg.model.depth, cfg.model.dropout) == (64, 2, 0.0)


# -- coercion -----------------------------------------------------------------------------


def test_float_coercion(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; float fields accept it, and ints.
    path = write(tmp_path, "optim:\n  lr: 1e-3\n  weight_decay: 1\n")
    cfg = load_config(RunCfg, path, ["model.dropout=1e-1", "max_grad_norm=2"])
    assert cfg.optim.lr == 0.001 and type(cfg.optim.lr) is float
    assert cfg.optim.weight_decay == 1.0 and type(cfg.optim.weight_decay) is float
    assert cfg.model.dropout == 0.1
    assert cfg.max_grad_norm == 2.0 and type(cfg.max_grad_norm) is float


def test_lists_tuples_and_none():
    cfg = load_config(
        RunCfg,
        None,
        ["optim.schedule=[1, 1e-3, 0.5]", "model.channels=[8, 16]", "tags=[a, b]", "max_grad_norm=null"],
    )
    assert cfg.optim.schedule == [1.0, 0.001, 0.5]
    assert all(type(x) is float for x in cfg.optim.schedule)
    assert cfg.model.channels == [8, 16]
    assert cfg.tags == ("a", "b")
    assert cfg.max_grad_norm is None


def test_str_and_path_fields_from_command_line():
    cfg = load_config(RunCfg, None, ["name=2024", "resume=null", "out_dir=/tmp/x"])
    assert cfg.name == "2024"  # the text as typed, not the int YAML would make of it
    assert cfg.resume is None
    assert cfg.out_dir == Path("/tmp/x")
    assert load_config(RunCfg, None, ["resume=ckpt/last.pt"]).resume == "ckpt/last.pt"
    assert load_config(RunCfg, None, ["name=a: b"]).name == "a: b"


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=true", "command line: seed: expected int, got True (bool)"),
        ("seed=1.5", "command line: seed: expected int, got 1.5 (float)"),
        ("optim.lr=true", "command line: optim.lr: expected float, got True (bool)"),
        ("amp=1", "command line: amp: expected bool, got 1 (int)"),
        ("model.channels=[1, x]", "command line: model.channels[1]: expected int, got 'x' (str)"),
        ("model.channels=3", "command line: model.channels: expected list[int], got 3 (int)"),
        ("optim.betas=[0.9]", "command line: optim.betas: expected tuple[float, float], got [0.9] (list)"),
        ("max_grad_norm=abc", "command line: max_grad_norm: expected float | None, got 'abc' (str)"),
        ("optim.kind=adam", "command line: optim.kind: expected one of 'adamw', 'sgd', got 'adam' (str)"),
        ("model=5", "command line: model: expected a mapping of ModelCfg keys, got 5 (int)"),
        ("eval=5", "command line: eval: expected a mapping of EvalCfg keys or null, got 5 (int)"),
    ],
)
def test_wrong_type_on_command_line(override, message):
    with error(message):
        load_config(RunCfg, None, [override])


# -- errors -------------------------------------------------------------------------------


def test_wrong_type_in_file_names_file_key_type_and_value(tmp_path):
    path = write(tmp_path, "optim:\n  lr: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(RunCfg, path)
    assert str(e.value) == f"{path}: optim.lr: expected float, got 'abc' (str)"


def test_unknown_keys_list_valid_keys(tmp_path):
    with error("command line: unknown key 'optim.lrr' (valid: lr, betas, weight_decay, schedule, kind)"):
        load_config(RunCfg, None, ["optim.lrr=1"])
    with error("command line: unknown key 'optimizer' (valid: name, seed, amp,"):
        load_config(RunCfg, None, ["optimizer.lr=1"])
    with error("command line: unknown key 'seed.x' ('seed' has type int, not a section)"):
        load_config(RunCfg, None, ["seed.x=1"])
    path = write(tmp_path, "model:\n  dims: 3\n")
    with error(f"{path}: unknown key 'model.dims' (valid: dim, depth, dropout, channels)"):
        load_config(RunCfg, path)


def test_override_without_equals():
    with error("command line: override 'model.dim' is not of the form key=value"):
        load_config(RunCfg, None, ["model.dim"])
    with error("is not of the form key=value"):
        load_config(RunCfg, None, ["=3"])
    with pytest.raises(TypeError):  # a bare string would be split into characters
        load_config(RunCfg, None, "seed=1")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with error(f"{path}: config file not found"):
        load_config(RunCfg, path)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "seed: 1\nmodel:\n  dim: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid YAML at line")):
        load_config(RunCfg, path)
    path = write(tmp_path, "- 1\n- 2\n", name="list.yaml")
    with error(f"{path}: expected a mapping of config keys at the top level, got [1, 2] (list)"):
        load_config(RunCfg, path)


def test_post_init_errors_name_the_source(tmp_path):
    path = write(tmp_path, "model:\n  dim: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(RunCfg, path)
    assert str(e.value) == f"{path}: model: dim must be even, got 3"
    with error("command line: model: dim must be even, got 5"):
        load_config(RunCfg, None, ["model.dim=5"])
    # Checked on the final combination: an override can fix what the file got wrong.
    assert load_config(RunCfg, path, ["model.dim=4"]).model.dim == 4


def test_required_field():
    with error("missing required key 'root'"):
        load_config(NeedsData)
    assert load_config(NeedsData, None, ["root=/data"]) == NeedsData(root="/data")


def test_config_error_is_value_error():
    # The CLI reports ValueError as a one-line user error.
    assert issubclass(ConfigError, ValueError)


# -- round trip ---------------------------------------------------------------------------


def custom_cfg() -> RunCfg:
    return load_config(
        RunCfg,
        None,
        [
            "name=exp 1",
            "seed=7",
            "amp=false",
            "resume=null",
            "max_grad_norm=null",
            "tags=[x, '1e-3', 'true']",
            "out_dir=runs/exp1",
            "model.dim=256",
            "model.dropout=0.1",
            "optim.lr=1e-8",
            "optim.betas=[0.5, 0.999]",
            "optim.schedule=[1e-3, 0.25]",
            "eval=null",
        ],
    )


def test_dict_round_trip():
    cfg = custom_cfg()
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d  # plain JSON-able values only
    assert d["optim"]["betas"] == [0.5, 0.999] and d["tags"] == ["x", "1e-3", "true"]
    assert d["out_dir"] == "runs/exp1" and d["eval"] is None
    assert list(d) == ["name", "seed", "amp", "resume", "max_grad_norm", "out_dir", "tags", "model", "optim", "eval"]
    assert config_from_dict(RunCfg, d) == cfg
    assert config_from_dict(RunCfg, config_to_dict(RunCfg())) == RunCfg()


def test_from_dict_partial_and_errors():
    assert config_from_dict(RunCfg, {"model": {"dim": 64}}) == RunCfg(model=ModelCfg(dim=64))
    with error("checkpoint: model.dim: expected int, got '64' (str)"):
        config_from_dict(RunCfg, {"model": {"dim": "64"}})
    with error("run.json: unknown key 'bogus'"):
        config_from_dict(RunCfg, {"bogus": 1}, source="run.json")


def test_from_dict_may_omit_only_the_listed_fields():
    d = config_to_dict(RunCfg())
    del d["seed"], d["amp"]
    assert config_from_dict(RunCfg, d, may_omit={"seed", "amp"}) == RunCfg()
    with error("ckpt/config.json: missing required key 'amp'"):
        config_from_dict(RunCfg, d, source="ckpt/config.json", may_omit={"seed"})
    with error("missing required key 'name' (and 'seed', 'amp')"):
        config_from_dict(RunCfg, {k: v for k, v in d.items() if k != "name"}, may_omit=())


def test_from_dict_on_a_base_instance():
    base = custom_cfg()
    cfg = config_from_dict(RunCfg, {"optim": {"lr": 2e-4}}, base=base)
    assert cfg.optim.lr == 2e-4 and cfg.model == base.model and cfg.name == base.name
    assert base.optim.lr == 1e-8  # original untouched
    with error("spec.yaml: optim.kind: expected one of 'adamw', 'sgd', got 'adam' (str)"):
        config_from_dict(RunCfg, {"optim": {"kind": "adam"}}, source="spec.yaml", base=base)


@dataclass
class Choices:
    kind: Literal["a", "b"] = "a"
    kinds: tuple[Literal["x", "y"], ...] = ("x",)
    maybe: Literal["p", "q"] | None = None
    free: str = "anything"

    def __post_init__(self):
        check_choices(self)


def test_check_choices_holds_direct_construction_to_the_literals():
    c = Choices(kind="b", kinds=["y", "x"], maybe="q")
    assert c.kinds == ("y", "x")  # a list given for the tuple field is normalised
    assert Choices(free="zzz").free == "zzz"  # plain str fields are not touched
    with pytest.raises(ValueError, match=re.escape("kind: expected one of 'a', 'b', got 'c' (str)")):
        Choices(kind="c")
    with pytest.raises(ValueError, match=re.escape("kinds[1]: expected one of 'x', 'y', got 'z' (str)")):
        Choices(kinds=("x", "z"))
    with pytest.raises(ValueError, match=re.escape("maybe: expected one of 'p', 'q' | None, got 'r' (str)")):
        Choices(maybe="r")
    # Through the engine the message also names the source and the dotted key.
    with error("command line: kind: expected one of 'a', 'b', got 'c' (str)"):
        load_config(Choices, None, ["kind=c"])


def test_yaml_round_trip(tmp_path):
    cfg = custom_cfg()
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(RunCfg, path) == cfg
    text = path.read_text()
    assert "betas: [0.5, 0.999]\n" in text and "model:\n  dim: 256\n" in text
    assert text.index("name:") < text.index("model:")  # field order kept, not sorted
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left behind
    save_config(RunCfg(), path)  # overwrite in place
    assert load_config(RunCfg, path) == RunCfg()


def test_apply_overrides_on_restored_config():
    base = custom_cfg()
    cfg = apply_overrides(base, ["optim.lr=2e-4", "eval.every=10"])
    assert cfg.optim.lr == 2e-4 and cfg.eval == EvalCfg(every=10)
    assert cfg.model == base.model and base.optim.lr == 1e-8  # original untouched
    with error("command line: model: dim must be even"):
        apply_overrides(base, ["model.dim=3"])


def test_extends_applies_the_base_file_first(tmp_path):
    write(tmp_path, "seed: 7\nname: base\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\n", "child.yaml")
    cfg = load_config(RunCfg, child, ["seed=9"])
    assert cfg.name == "child" and cfg.seed == 9
    assert load_config(RunCfg, child).seed == 7


def test_extends_errors_name_the_file(tmp_path):
    a = write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with error("cycle"):
        load_config(RunCfg, a)
    bad = write(tmp_path, "extends: [1]\n", "bad.yaml")
    with error("bad.yaml: extends: expected a config file path"):
        load_config(RunCfg, bad)
    missing = write(tmp_path, "extends: nope.yaml\n", "m.yaml")
    with error("nope.yaml: config file not found"):
        load_config(RunCfg, missing)


def test_shipped_method_configs_share_the_afd_budget():
    from afd.config import config_to_dict
    from afd.train.config import AdaptConfig

    afd = config_to_dict(load_config(AdaptConfig, "configs/train/afd.yaml"))
    for method in ("sft", "gan", "dmd"):
        other = config_to_dict(load_config(AdaptConfig, f"configs/train/{method}.yaml"))
        assert other["train"]["method"] == method and other["run"]["dir"] == f"runs/{method}"
        for section in ("teacher", "student", "disc", "eval", "afd"):
            assert other[section] == afd[section]
        # the budget is shared; the student lr is each method's own (GAN/DMD collapse at AFD's)
        same = {k: v for k, v in other["train"].items() if k not in ("method", "lr")}
        assert same == {k: v for k, v in afd["train"].items() if k not in ("method", "lr")}
        assert other["train"]["lr"] == (afd["train"]["lr"] if method == "sft" else 1e-5)


def test_every_shipped_config_loads_as_its_kind():
    """A typo in a committed YAML is found here, not an hour into a reproduction: every config of
    configs/ (train/, pretrain/, reproduce/) and every stage of a shipped checkpoint's recipe/."""
    import json

    from afd.reproduce.config import ReproduceConfig
    from afd.train.codec_train import CodecTrainConfig
    from afd.train.config import AdaptConfig
    from afd.train.pretrain import PretrainConfig

    folders = {"train": AdaptConfig, "pretrain": PretrainConfig, "reproduce": ReproduceConfig}
    paths = sorted(Path("configs").rglob("*.yaml"))
    assert len(paths) >= 14
    for path in paths:
        load_config(CodecTrainConfig if path.name.startswith("codec-") else folders[path.parent.name], path)
    # A shipped checkpoint's provenance: recipe/stage1.yaml ... stageN.yaml. A codec's stages are codec
    # runs; a student's are pretraining runs, except an adapted student's last one (`afd train`).
    shipped = sorted(p.parent for p in Path("checkpoints").glob("*/config.json"))
    assert len(shipped) >= 9
    for ckpt in shipped:
        names = {p.name for p in ckpt.glob("recipe/*.yaml")}
        n = len(names)
        assert n >= 1 and names == {f"stage{i}.yaml" for i in range(1, n + 1)}, ckpt
        meta = json.loads((ckpt / "config.json").read_text())
        for i in range(1, n + 1):
            if meta["format"] == "afd-frame-codec":
                cls = CodecTrainConfig
            else:
                cls = AdaptConfig if i == n and "adapted_with" in meta.get("extra", {}) else PretrainConfig
            load_config(cls, ckpt / "recipe" / f"stage{i}.yaml")
    frame = load_config(PretrainConfig, "checkpoints/base-latent-frame/recipe/stage3.yaml")
    assert frame.model.block_frames == 1 and frame.init == "base-latent"
    assert frame.export == "checkpoints/base-latent-frame"
    latent = load_config(ReproduceConfig, "configs/reproduce/reproduce-latent.yaml")
    assert latent.families == {"latent-chunk": "base-latent", "latent-frame": "base-latent-frame"}
