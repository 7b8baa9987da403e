"""The reproduction's config: what to run (methods x families x seeds, sweeps) and at what size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from afd.config import check_choices
from afd.methods import MethodName as TrainedMethod
from afd.methods.registry import method_names, reference_methods

# In the registry's report order; "base": the starting student, evaluated, not trained.
METHODS = ("base", *method_names())
# Reference rows (the oracle: AFD's update with exact-physics weights) are the ceiling AFD's gain
# is read against, not baselines.
REFERENCE_METHODS = reference_methods()
# The eval splits every row is scored on unless a config names others (``eval_splits``).
DEFAULT_EVAL_SPLITS = ("physics-eval", "general-eval")


@dataclass
class SweepsConfig:
    """The paper's ablations, each on one family and one seed. An empty list skips a sweep."""

    family: str = "chunk"
    seed: int = 0
    # Fig. 1: SFT for this many student updates each (0, the base, is always included).
    sft_steps: list[int] = field(default_factory=lambda: [25, 50, 100, 200])
    # Fig. 5: eta_D values. The paper sweeps {0, 1e-6, 5e-6, 1e-5, 5e-5} at student lr 1e-5; our
    # student lr is 1e-4, so the same ratios eta_D / lr = {0, 0.1, 0.5, 1, 5} give these.
    eta_d: list[float] = field(default_factory=lambda: [0.0, 1e-5, 5e-5, 1e-4, 5e-4])
    # Fig. 6: discriminator loss, Bradley-Terry vs GAN-style.
    disc_loss: list[Literal["bt", "gan"]] = field(default_factory=lambda: ["bt", "gan"])
    # Beyond the paper: teacher clips per physics-train prompt, for these methods.
    budget_clips: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # The paper's regime, few paid clips: adapt on only this many physics-train prompts (one clip
    # each, train.pool_size), e.g. [25, 50, 100, 200].
    budget_prompts: list[int] = field(default_factory=list)
    # The methods both budget sweeps run: registered methods or variant names.
    budget_methods: list[str] = field(default_factory=lambda: ["sft", "afd"])

    def __post_init__(self):
        check_choices(self)


@dataclass
class GateConfig:
    """A pass/fail rule for each trained row against its family's base (``afd reproduce`` prints a
    gate table when ``enabled``): the PC gain at least ``min_pc_gain``, the general total at most
    ``max_general_drop`` below the base, the dynamic degree at least ``min_dynamic_degree``. The
    update gate (configs/reproduce/update-gate.yaml) is one."""

    enabled: bool = False
    min_pc_gain: float = 10.0
    max_general_drop: float = 2.0
    min_dynamic_degree: float = 90.0


@dataclass
class ReproduceConfig:
    name: str = "default"
    report_dir: str = "reports/default"  # report.md, results.json, figures, strips
    work_dir: str = "runs/reproduce/default"  # one directory per job (checkpoints, logs)
    configs_dir: str = "configs/train"  # where <method>.yaml live (sft.yaml, gan.yaml, dmd.yaml, afd.yaml)
    # Rows: "base", a registered method, or a name from ``variants``.
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # Named rows that run a registered method with extra key=value overrides: name -> [method,
    # key=value, ...], e.g. {oracle-filtered: [oracle, afd.update=reward-filtered]}. A variant also
    # takes its method's ``method_overrides``, then its own.
    variants: dict[str, list[str]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=lambda: {"chunk": "base-chunk", "frame": "base-frame"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Rows run at other seeds than ``seeds``: ROW -> its seeds (e.g. a gate's winner confirmed on 3),
    # or ROW/FAMILY -> its seeds on that family only (e.g. the seed a lost pass did not reach).
    row_seeds: dict[str, list[int]] = field(default_factory=dict)
    # Rows run on only some of ``families``: row -> those families (e.g. a follow-up of one base).
    row_families: dict[str, list[str]] = field(default_factory=dict)
    # Run order of the main grid: "seeds" (seed-major: a partial reproduction has every family and
    # method at the first seeds) or "families" (family-major: the first family's seeds all finish
    # first, so a partial reproduction already decides that family with seed errors).
    order: Literal["seeds", "families"] = "seeds"
    steps: int = 100  # student updates per run (the same for every method)
    overrides: list[str] = field(default_factory=list)  # key=value for every `afd train` run
    # key=value for one method's runs (after `overrides`), e.g. {afd: [disc.model.instance_noise=0.3]}
    method_overrides: dict[TrainedMethod, list[str]] = field(default_factory=dict)
    eval_per_prompt: int = 2  # clips per eval prompt for every row
    eval_prompts_per_split: int | None = None  # None: every prompt of physics-eval and general-eval
    eval_seed: int = 1000
    # Every eval's splits (base, world rows, trained runs). A tuning sweep (configs/reproduce/
    # baseline-lr.yaml) sets [physics-val, general-val], so its choice never reads the eval splits.
    eval_splits: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_SPLITS))
    # Longer evals (frames, multiples of 16 past 16): the world rows, every base and every main-grid
    # run are also sampled at each length, streamed, and scored per 2-second window and whole
    # (docs/long-videos.md). The report gets a long-horizon table, drift curves and the claim
    # that on-policy training holds physics over the long horizon better than SFT.
    eval_frames: list[int] = field(default_factory=list)
    # Continual adaptation (docs/style.md): the original domain's splits. Every base and main-grid
    # run is also scored on them (job ``<id>-retain``), and the report says what each run kept of
    # the domain it started from (afd.reproduce.domain).
    retention_splits: list[str] = field(default_factory=list)
    sweeps: SweepsConfig = field(default_factory=SweepsConfig)
    # Other reproductions' work dirs: a job not yet started here that one of them finished with
    # exactly the planned resolved config (or eval command) and student weights is copied in, not
    # rerun (afd.reproduce.jobs.find_reusable).
    reuse_from: list[str] = field(default_factory=list)
    # Shipped students: checkpoint name -> METHOD/FAMILY; the first seed's main-grid run is copied
    # to checkpoints/<name> with a card once it has finished (afd.reproduce.ship).
    ship: dict[str, str] = field(default_factory=dict)
    notes: str = ""  # printed under the report's setup line (e.g. where the other families' report is)
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self):
        check_choices(self)
        for name, spec in self.variants.items():
            if name in METHODS:
                raise ValueError(f"variants.{name}: a variant needs a name of its own, not the method {name!r}")
            if not spec or spec[0] not in METHODS[1:]:
                raise ValueError(f"variants.{name}: expected [METHOD, key=value, ...] with METHOD one of "
                                 f"{', '.join(METHODS[1:])}, got {spec!r}")
            bad = [o for o in spec[1:] if "=" not in o]
            if bad:
                raise ValueError(f"variants.{name}: expected key=value overrides after the method, got {bad!r}")
        bad = [k for k, s in self.row_seeds.items() if not s or k.split("/", 1)[0] not in self.methods
               or k.split("/", 1)[0] == "base" or ("/" in k and k.split("/", 1)[1] not in self.families)]
        if bad:
            raise ValueError(f"row_seeds: {', '.join(map(repr, bad))} is not ROW or ROW/FAMILY with ROW a trained "
                             f"row of methods and FAMILY one of families ({', '.join(self.families)}), or lists "
                             "no seed")
        bad = [r for r, fams in self.row_families.items()
               if r not in self.methods or r == "base" or not fams or set(fams) - set(self.families)]
        if bad:
            raise ValueError(f"row_families: {', '.join(map(repr, bad))} is not a trained row of methods, or names "
                             f"no family or one not in families ({', '.join(self.families)})")
        unknown = [m for m in self.methods if m not in METHODS and m not in self.variants]
        if unknown:
            raise ValueError(f"methods: {', '.join(map(repr, unknown))} is neither a method "
                             f"({', '.join(METHODS)}) nor a name in variants")
        trained = [m for m in METHODS if m != "base"]
        unknown = [m for m in self.sweeps.budget_methods if m not in trained and m not in self.variants]
        if unknown:
            raise ValueError(f"sweeps.budget_methods: {', '.join(map(repr, unknown))} is neither a trained method "
                             f"({', '.join(trained)}) nor a name in variants")
        if not self.families:
            raise ValueError("families must name at least one family: checkpoint")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.steps < 1 or self.eval_per_prompt < 1:
            raise ValueError(f"steps and eval_per_prompt must be >= 1, got {self.steps}, {self.eval_per_prompt}")
        for name, spec in self.ship.items():
            method, _, family = spec.partition("/")
            if method not in self.methods or method == "base" or family not in self.families:
                raise ValueError(f"ship.{name}: {spec!r} is not METHOD/FAMILY of this reproduction "
                                 f"(methods {', '.join(m for m in self.methods if m != 'base')}; "
                                 f"families {', '.join(self.families)})")
            if name in self.families.values() or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"ship.{name}: expected a new folder name of letters, digits, - and _ "
                                 f"(not one of the bases {', '.join(self.families.values())})")
        if self.sweeps.family not in self.families:
            raise ValueError(f"sweeps.family {self.sweeps.family!r} is not one of families "
                             f"({', '.join(self.families)})")
        from afd.world.splits import SPLIT_NAMES

        for name in ("eval_splits", "retention_splits"):
            unknown = [s for s in getattr(self, name) if s not in SPLIT_NAMES]
            if unknown:
                raise ValueError(f"{name}: unknown split(s) {', '.join(map(repr, unknown))}; valid splits: "
                                 f"{', '.join(SPLIT_NAMES)}")
        if not self.eval_splits:
            raise ValueError("eval_splits must name at least one split")
        bad = [n for n in self.eval_frames if n <= 16 or n % 16]
        if bad:
            raise ValueError(f"eval_frames: {bad} - each length must be a multiple of 16 frames past 16 "
                             f"(2-second windows of the judge)")
        if any(k < 1 for k in self.sweeps.budget_clips + self.sweeps.sft_steps + self.sweeps.budget_prompts):
            raise ValueError("sweeps.budget_clips, sweeps.budget_prompts and sweeps.sft_steps must be >= 1")

    def base_method(self, row: str) -> str:
        """The registered method a row runs ("base" for the base row)."""
        return self.variants[row][0] if row in self.variants else row

    def seeds_of(self, row: str, family: str) -> list[int]:
        """The seeds a trained row runs at on ``family`` (``row_seeds`` of ROW/FAMILY, else of ROW,
        else ``seeds``)."""
        return self.row_seeds.get(f"{row}/{family}", self.row_seeds.get(row, self.seeds))

    def runs_on(self, row: str, family: str) -> bool:
        """Whether a trained row runs on ``family`` (``row_families``, else every family)."""
        return family in self.row_families.get(row, self.families)

    def row_overrides(self, row: str) -> list[str]:
        """A row's own overrides: its method's ``method_overrides``, then a variant's."""
        own = self.variants[row][1:] if row in self.variants else []
        return [*self.method_overrides.get(self.base_method(row), []), *own]


def row_update(res: dict, family: str, row: str) -> str | None:
    """The student update a row's runs recorded in ``results.json`` ("nft", "reward-filtered",
    ...), None if unknown (older reports record none)."""
    return next((r.get("update") for r in res.get("runs") or [] if r["family"] == family and r["method"] == row),
                None)


def row_methods(saved: dict | None, rows) -> dict[str, str]:
    """Each row's registered method, read from a saved config (``results.json``'s ``config``): a
    variant's method, else the row itself. The dict form of :meth:`ReproduceConfig.base_method`
    for reports re-decided without loading the config."""
    variants = (saved or {}).get("variants") or {}
    return {m: (variants[m][0] if m in variants else m) for m in rows}
