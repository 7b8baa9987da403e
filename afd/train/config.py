"""The adaptation run's config (``afd train``): one dataclass tree, YAML in ``configs/train/``, overrides.

Sections: ``run`` (where and how often to write), ``train`` (the loop shared by every method),
``teacher`` (the black box and its budget), ``student`` (which base, full fine-tuning or LoRA),
``disc`` (discriminator network, loss and eta_D), one section per method (``afd``, ``sft``,
``gan``, ``dmd``; only ``train.method``'s is used), ``eval``, ``dist`` (how the student trains
across ``torchrun`` ranks).
Every field is documented where it is declared; the resolved config is saved as
``<run.dir>/config.yaml`` and inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass, replace
from typing import Literal

from afd.config import check_choices
from afd.device import check_device_spec
from afd.disc.config import DiscConfig
from afd.methods import MethodName
from afd.methods.registry import config_sections
from afd.train.judge import JudgeName


@dataclass
class RunConfig:
    dir: str = "runs/afd"
    save_every: int = 25  # iterations between checkpoints (and always at the end)
    tensorboard: bool = True


@dataclass
class LoopConfig:
    method: MethodName = "afd"  # a registered method (afd.methods.registry)
    steps: int = 200  # iterations (each: collect, n_D discriminator steps, n_S student steps)
    seed: int = 0
    split: str = "physics-train"  # adaptation prompts (the teacher is only asked about these)
    # Your own prompts instead of a world split: a .txt (one per line) or .jsonl ({"prompt": ...}
    # per line) file of free text (afd.prompts). With prompts outside the world's grammar, set
    # eval.judge=none: nothing can score them exactly.
    prompts_file: str | None = None
    # Adapt on only this many prompts of the split (or file): a fixed subset, the same for every
    # seed and method (afd.prompts.subset_pool). The teacher budget follows (pool_size x
    # clips_per_prompt): the few-paid-clips regime of the teacher-budget curve. None: all of them.
    pool_size: int | None = None
    prompts: int = 8  # P prompts per iteration (global, split over ranks)
    rollouts: int = 4  # G rollouts per prompt (the per-prompt baseline needs G >= 2)
    # Frames of each on-policy rollout (None: the student's own length). Longer rollouts stream
    # with the student's rolling window, the discriminator compares random teacher-length windows
    # of them with the teacher's clips, and the update trains on the whole rollout
    # (docs/long-videos.md). Teacher clips and the budget are unchanged.
    frames: int | None = None
    student_steps: int = 1  # n_S optimizer steps per iteration on the same collected batch
    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    # The student's and the discriminator's optimizer. sgd (plain, same lr and weight decay) makes
    # a step linear in the gradient: what a check of gradients across engines compares.
    optimizer: Literal["adamw", "sgd"] = "adamw"
    old_decay: float = 0.99  # EMA decay of the old (data-collecting) policy, per optimizer step
    # > 0: the decay ramps up as min(old_decay, old_decay_ramp * n) after the n-th optimizer step,
    # the DiffusionNFT reference's schedule (ramp 0.001 up to 0.5): the old policy starts as the
    # current one and stays close to it. 0: old_decay from the first step (the paper's EMA 0.99).
    old_decay_ramp: float = 0.0
    # bf16 autocast for forwards (losses and optimizer stay fp32); auto: only where bf16 is native
    # (a CUDA GPU, a CPU with AMX or AVX512-BF16), fp32 elsewhere (afd.device.resolve_amp).
    amp: bool | Literal["auto"] = "auto"
    # Iterations between the log-only fidelity measures (reward_fidelity, cues, rollout_pc), which
    # track every rollout and cost about as much as an AFD iteration on the state students; the
    # oracle measures its rollouts anyway, so its rows are always logged.
    fidelity_every: int = 1
    # auto (a CUDA GPU when one is usable, else the CPU), cpu, cuda or cuda:N (afd.device).
    device: str = "auto"

    def __post_init__(self):
        check_choices(self)
        for name in ("steps", "prompts", "rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.student_steps < 0:
            raise ValueError(f"student_steps must be >= 0, got {self.student_steps}")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"frames must be >= 1 or null (the student's length), got {self.frames}")
        if not 0 <= self.old_decay < 1:
            raise ValueError(f"old_decay must be in [0, 1), got {self.old_decay}")
        if self.old_decay_ramp < 0:
            raise ValueError(f"old_decay_ramp must be >= 0 (0: constant old_decay), got {self.old_decay_ramp}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.fidelity_every < 1:
            raise ValueError(f"fidelity_every must be >= 1, got {self.fidelity_every}")
        check_device_spec(self.device)

    def old_decay_at(self, n: int) -> float:
        """The old policy's EMA decay after the n-th optimizer step (n >= 1)."""
        return min(self.old_decay, self.old_decay_ramp * n) if self.old_decay_ramp > 0 else self.old_decay


@dataclass
class TeacherConfig:
    spec: str = "world"  # afd.teacher.make_teacher spec: world[:real], folder:DIR, http://..., api:FILE
    cache_dir: str = "cache/teacher"  # shared by every run: a clip is paid for once
    clips_per_prompt: int = 1  # teacher seeds 0 .. clips_per_prompt - 1 per adaptation prompt
    budget: int | None = None  # max clips ever paid in the cache (None: len(split) * clips_per_prompt)
    prefetch: bool = True  # pay for the whole budget before the first iteration

    def __post_init__(self):
        if self.clips_per_prompt < 1:
            raise ValueError(f"clips_per_prompt must be >= 1, got {self.clips_per_prompt}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0 or null, got {self.budget}")


@dataclass
class StudentInitConfig:
    checkpoint: str = "base-chunk"  # a shipped name or a save_pretrained directory
    lora_rank: int = 0  # 0: full fine-tuning; > 0: LoRA (peft) on the attention/MLP linears
    lora_alpha: float = 16.0
    # Sampler overrides for every rollout of the run (collection, evals, the saved adapted student;
    # the base's "before" eval too, so both columns use one sampler). None: the checkpoint's own.
    # guidance: the classifier-free guidance scale of every block (1 = off); project_blocks: each
    # finished block goes through the codec's clamps before it is cached and returned.
    # steps / shift / renoise: the denoising levels per block and what happens between steps
    # (e.g. steps=32 renoise=ddim integrates the model's flow instead of the few-step sampler).
    guidance: float | None = None
    project_blocks: bool | None = None
    steps: int | None = None
    shift: float | None = None
    renoise: Literal["fresh", "ddim"] | None = None
    # Streaming past the checkpoint's frames: the rolling window (frames), the attention sink and
    # how the window's cache moves (docs/long-videos.md). None: the checkpoint's own.
    window: int | None = None
    sink: bool | None = None
    stream_cache: Literal["reencode", "roll"] | None = None

    def __post_init__(self):
        check_choices(self)
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.guidance is not None and self.guidance <= 0:
            raise ValueError(f"student.guidance must be > 0 (1: off) or null, got {self.guidance}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"student.steps must be >= 1 or null, got {self.steps}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"student.shift must be > 0 or null, got {self.shift}")

    def apply(self, model) -> None:
        """Set the sampler overrides on a loaded student's config (in place)."""
        c = model.config
        if self.guidance is not None:
            c.guidance = self.guidance
            c.first_guidance = 0.0  # the same scale for block 0
        if self.project_blocks is not None:
            c.project_blocks = self.project_blocks
        if self.steps is not None:
            c.steps, c.first_steps = self.steps, 0  # block 0 too
        if self.shift is not None:
            c.shift = self.shift
        if self.renoise is not None:
            c.renoise = self.renoise
        if self.window is not None:
            c.window = self.window
        if self.sink is not None:
            c.sink = self.sink
        if self.stream_cache is not None:
            c.stream_cache = self.stream_cache
        if self.window is not None or self.sink is not None or self.stream_cache is not None:
            try:
                c.check_sampler()
            except ValueError as e:
                raise ValueError(f"student.window / student.sink / student.stream_cache: {e}") from None


@dataclass
class DiscTrainConfig:
    model: DiscConfig = field(default_factory=DiscConfig)
    loss: Literal["bt", "gan"] = "bt"  # "bt" (paper Eq. 1) or "gan" (BCE on absolute logits, Fig. 6)
    lr: float = 2e-5  # eta_D; 0 freezes D (the Fig. 5 sweep's lower end)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-4
    steps: int = 2  # n_D discriminator steps per iteration
    grad_clip: float = 1.0
    r1_gamma: float = 0.0  # R1 penalty weight on teacher clips (0: off)
    augment: bool = True  # physics-preserving left/right mirroring of prompt-paired clips
    warmup_iters: int = 0  # D-only iterations (teacher vs base rollouts) before the first update
    # > 0: D sees every clip, teacher and rollout alike, re-rendered by the frozen reference
    # student (noised to this level, one x0 estimate; afd.train.disc_phase.rerender), so the
    # student's rendering artefacts are on both sides and only what survives the noise - the
    # motion - separates them. 0: D sees the clips as they are. AFD only (no gradient through D).
    rerender_t: float = 0.0
    # Label smoothing eps of the D loss (bt or gan): the teacher wins with target probability
    # 1 - eps, so margins stop at log((1 - eps) / eps) and D cannot saturate (afd/disc/losses.py).
    label_smoothing: float = 0.0
    # > 0: keep this many past prompt groups (teacher clip + its rollouts) and add up to a batch's
    # worth of them to every D step (afd.train.disc_phase.ReplayBuffer; saved with checkpoints).
    replay: int = 0
    # > 0: rollouts are scored by an exponential moving average of D's weights with this decay
    # (D itself still trains and, for GAN/DMD, gives the student's gradient). A single D's ranking
    # of near-equal rollouts moves with each step's batch; the average keeps what steps agree on.
    ema: float = 0.0
    # Rollouts longer than the teacher's clips (train.frames): D compares a "random" teacher-length
    # window of each and scores a rollout by its mean logit over covering windows, or only the
    # "first" window, where a rollout starts as a teacher clip does (the control for a D that
    # rejects late windows for not looking like a clip's opening; docs/long-videos.md).
    window: Literal["random", "first"] = "random"

    def __post_init__(self):
        check_choices(self)
        if not 0 <= self.ema < 1:
            raise ValueError(f"disc.ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"disc.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.replay < 0:
            raise ValueError(f"disc.replay must be >= 0, got {self.replay}")
        if not 0 <= self.rerender_t < 1:
            raise ValueError(f"disc.rerender_t must be in [0, 1), got {self.rerender_t}")
        if self.lr < 0 or self.steps < 0 or self.warmup_iters < 0 or self.r1_gamma < 0:
            raise ValueError("disc.lr, disc.steps, disc.warmup_iters and disc.r1_gamma must be >= 0")


@dataclass
class EvalConfig:
    every: int = 50  # iterations between subset evaluations (0: only before and after)
    prompts_per_split: int = 12  # the fixed eval subset logged during training
    per_prompt: int = 1
    strip_prompts: int = 4  # rows of teacher | student before | student now in each strip
    final_per_prompt: int = 2  # eval.json: every prompt of both eval splits, this many clips each
    final_prompts_per_split: int | None = None  # None: all eval prompts (a smaller value for smoke tests)
    seed: int = 1000  # eval noise, fixed across runs and train seeds
    # The judge's splits for eval_base.json / eval.json: the eval splits by default; tuning runs
    # (a baseline's learning rate) use [physics-val, general-val] so no choice reads the eval splits.
    splits: list[str] = field(default_factory=lambda: ["physics-eval", "general-eval"])
    # Score the base student on the final-eval set first (eval_base.json, the "before" column).
    # `afd reproduce` turns it off and evaluates each base once with `afd eval --checkpoint`.
    before: bool = True
    # Who scores clips exactly (afd.train.judge): "world" (the built-in world's evaluator: log-only
    # fidelity, evals, tables; needs world-grammar prompts) or "none" (a real teacher: the run
    # trains, logs, checkpoints and draws strips, with no evaluation).
    judge: JudgeName = "world"

    def __post_init__(self):
        check_choices(self)


@dataclass
class DistConfig:
    """How the student trains across ``torchrun`` ranks (docs/training.md, "Many processes"). With
    one process nothing is wrapped, except that ``activation_checkpointing`` still applies."""

    # "ddp": every rank holds the whole student; torch's DistributedDataParallel all-reduces its
    # gradients during backward. "fsdp2": torch's fully_shard, one unit per transformer block
    # and one for the rest; parameters, gradients and optimizer state are split over ranks.
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    # fsdp2 only: "bf16" gathers parameters in bf16 for compute and reduces gradients in fp32
    # (MixedPrecisionPolicy); "none" keeps everything fp32 (exact parity with one process).
    mixed_precision: Literal["bf16", "none"] = "bf16"
    # Recompute each transformer block's activations in backward instead of storing them.
    activation_checkpointing: bool = False

    def __post_init__(self):
        check_choices(self)


def _adapt_config_class() -> type:
    """The whole ``afd train`` config: the loop's sections, then one section per registered method
    with a config of its own (``afd.methods.registry``), then eval and dist. Built from the
    registry so that a new method adds its section without an edit here."""
    base = [("run", RunConfig), ("train", LoopConfig), ("teacher", TeacherConfig), ("student", StudentInitConfig),
            ("disc", DiscTrainConfig)]
    tail = [("eval", EvalConfig), ("dist", DistConfig)]
    sections = [*base, *config_sections().items(), *tail]
    cls = make_dataclass("AdaptConfig", [(name, tp, field(default_factory=tp)) for name, tp in sections],
                         namespace={"__module__": __name__})
    cls.__doc__ = "The config of ``afd train``: sections " + ", ".join(name for name, _ in sections) + "."
    return cls


AdaptConfig = _adapt_config_class()


def public_config(cfg: AdaptConfig) -> AdaptConfig:
    """``cfg`` as it is written next to a run and into its checkpoints and students: a teacher URL's
    credentials (``user:key@``, ``?api_key=``) replaced by ``***`` (afd.teacher.urls)."""
    from afd.teacher.urls import redact_text

    return replace(cfg, teacher=replace(cfg.teacher, spec=redact_text(cfg.teacher.spec)))
