"""The small interface every adaptation method implements, and what the loop hands it.

One iteration of the shared loop (``afd.train.loop``, paper Algorithm 1) is: draw prompts ->
teacher clips (budgeted, cached) -> rollouts of the old policy (if the method uses them) ->
discriminator steps (if it uses the shared discriminator) -> ``method.critic_steps`` (its own
critics, e.g. DMD's fake score) -> ``method.prepare`` -> n_S times
``method.student_loss`` + optimizer step + old-policy EMA update. A method therefore says
*which data it needs* (class flags) and *what its student objective is* (``student_loss``); it
may own extra networks and optimizers (``modules`` / ``optimizers``) that the loop checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from afd.student.base import ReferenceModel, StudentModel
from afd.student.codec import Codec
from afd.student.rollout import SamplerRecord
from afd.text.encoder import TextEncoding


@dataclass
class Models:
    """The networks of a run. ``student`` trains; ``old`` is its EMA (collects rollouts, gives
    v_old); ``ref`` is the frozen initial student (or the LoRA student with adapters off) with
    ``forward_train`` / ``to_velocity``; ``disc`` is the shared discriminator (None if unused);
    ``codec`` maps the pixel clips of a ``Batch`` into the student's space."""

    student: StudentModel
    old: StudentModel
    ref: ReferenceModel
    disc: torch.nn.Module | None
    codec: Codec  # pixels <-> the student's space


@dataclass
class Batch:
    """What one iteration collected on this rank (its prompt shard).

    prompts: P local prompts; text: their encodings. teacher: (P, T, C, H, W) teacher clips in
    the student's pixel format, [-1, 1]. rollouts: (P * G, T, C, H, W) the old policy's finished
    clips in the student's pixel format (clamped, detached), the G rollouts of prompt i in rows
    i*G .. i*G+G-1; rollout_text: their encodings; group_ids: (P * G,) prompt index per rollout.
    d_teacher / d_student: discriminator logits (eval mode, no gradient) after this iteration's
    D steps. None where the method does not collect that data.
    """

    step: int
    prompts: list[str]
    text: TextEncoding
    teacher: torch.Tensor
    rollouts: torch.Tensor | None = None
    # The same rollouts in the student's space, exactly as the rollout produced them (what their
    # blocks' cache was written from): methods that train on the student's own samples use these
    # rather than re-encoding the decoded pixels.
    rollout_latents: torch.Tensor | None = None
    rollout_text: TextEncoding | None = None
    group_ids: torch.Tensor | None = None
    d_teacher: torch.Tensor | None = None
    d_student: torch.Tensor | None = None
    # The rollouts' exact measures (afd.eval.measures.rollout_measures), if a method already
    # computed them (the oracle); the loop's log-only fidelity then reuses them.
    measures: dict | None = None
    # Every state the rollouts' sampler visited (the method's ``records_sampler``), in the
    # rollouts' order.
    sampler: SamplerRecord | None = None
    # Prefix groups (the method's ``prefix_groups``): the rollouts of a prompt share their blocks
    # before this one bit for bit; 0 when they share nothing.
    branch_block: int = 0


@dataclass
class Prepared:
    """A method's per-iteration preparation: per-rollout weights or, failing those, scores (logged
    against the true physics as ``reward_fidelity``; None if the method has neither) and scalars
    to log."""

    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None  # per-rollout critic scores, when there are no weights
    stats: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class: override the flags and ``student_loss``; ``prepare`` is optional."""

    name = "method"
    uses_rollouts = True  # the loop collects G rollouts per prompt with the old policy
    uses_discriminator = True  # the loop trains the shared discriminator on (teacher, rollout) pairs

    needs_judge = False  # the oracle: trained on a judge's exact scores (a diagnostic, never black-box)
    records_sampler = False  # the loop records every sampler state of the rollouts (Batch.sampler)
    prefix_groups = False  # a prompt's rollouts share a prefix and branch at Batch.branch_block
    # Keys of the iteration's log row shown on the progress bar (those present and finite).
    progress_keys: tuple[str, ...] = ()

    def __init__(self, cfg, models: Models, judge=None):
        """cfg: the run's AdaptConfig; judge: an ``afd.train.judge.Judge`` or None (only methods
        with ``needs_judge`` use it)."""
        if self.needs_judge and judge is None:
            raise ValueError(f"train.method={self.name} trains on a judge's exact scores and needs one "
                             "(eval.judge=world), got eval.judge=none")
        self.cfg, self.models, self.judge = cfg, models, judge

    def critic_steps(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """Train the method's own critic networks on this batch (after the shared D phase);
        returns scalars to log."""
        return {}

    def prepare(self, batch: Batch) -> Prepared:
        return Prepared()

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The student objective on this batch: a dict with ``loss`` (a scalar with gradient) and
        detached scalars to log. Called n_S times per iteration, under bf16 autocast."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """Extra networks the method owns (checkpointed by the loop)."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}
