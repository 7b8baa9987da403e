"""Building an adaptation run's networks and optimizers from its config (``afd train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from afd.disc.model import Discriminator
from afd.io_utils import file_sha256
from afd.methods import method_class
from afd.methods.base import Method, Models
from afd.student.base import Student, StudentModel, load_student_model
from afd.student.codec import make_codec
from afd.student.lora import AdaptersOff, add_lora
from afd.student.shipped import resolve_checkpoint
from afd.train.ema import make_ema
from afd.train.parallel import StudentParallel


@dataclass
class RunParts:
    """The networks and optimizers of a run, and the base student it starts from."""

    student: Student  # the trained backbone with its codec, text encoder and device
    models: Models
    method: Method
    opt_student: torch.optim.Optimizer
    opt_disc: torch.optim.Optimizer
    base_dir: Path
    base_sha: str
    parallel: StudentParallel  # how the student's training is spread over ranks


def load_base(cfg, base_dir: Path, device: torch.device) -> StudentModel:
    """The student before adaptation, with the run's sampler overrides (``student.*``), on ``device``."""
    model = load_student_model(base_dir, device)
    cfg.student.apply(model)
    return model


def check_disc_fits(disc_cfg, student: Student) -> None:
    """D must read the student's decoded clips and its text encodings: one clear error if not."""
    fmt = student.fmt
    if disc_cfg.resize:  # D resizes any frame size to its own: only frames and text width must agree
        want, got = (disc_cfg.frames, disc_cfg.text_dim), (fmt.frames, student.text.dim)
        if want != got:
            raise ValueError(f"the discriminator reads (frames, text_dim) = {want} but the student gives {got} "
                             f"({fmt.frames} frames of {fmt.height}x{fmt.width}, {student.text.name} text): "
                             f"set disc.model.frames={fmt.frames} disc.model.text_dim={student.text.dim}")
        return
    want = (disc_cfg.frames, disc_cfg.size, disc_cfg.text_dim)
    got = (fmt.frames, fmt.height, student.text.dim)
    if want != got or fmt.height != fmt.width:
        square = "" if fmt.height == fmt.width else " disc.model.resize=true (its frames are not square)"
        raise ValueError(f"the discriminator reads (frames, size, text_dim) = {want} but the student gives "
                         f"{got} ({fmt.frames} frames of {fmt.height}x{fmt.width}, {student.text.name} text): "
                         f"set disc.model.frames={fmt.frames} disc.model.size={fmt.height} "
                         f"disc.model.text_dim={student.text.dim}{square}")


def make_optimizer(kind: str, params, lr: float, betas: tuple[float, float], weight_decay: float):
    """``train.optimizer``'s optimizer over ``params``: AdamW, or plain SGD (betas unused)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def build_run(cfg, device: torch.device, judge=None) -> RunParts:
    """Student (full or LoRA), its old policy (EMA) and frozen reference, the discriminator, the
    method and both optimizers, all on ``device``. ``judge`` is handed to methods that need one.
    The student is wrapped for ``cfg.dist`` after every copy of it is made and before its optimizer."""
    if cfg.disc.rerender_t > 0 and cfg.train.method != "afd":
        raise ValueError(f"disc.rerender_t applies to afd only (train.method is {cfg.train.method!r}): "
                         "a method with a gradient through D would need it through the re-rendering too")
    base_dir = resolve_checkpoint(cfg.student.checkpoint)
    student = load_base(cfg, base_dir, device).train()
    if cfg.student.lora_rank:
        add_lora(student, cfg.student.lora_rank, cfg.student.lora_alpha)
        ref = AdaptersOff(student)
    else:
        ref = make_ema(student)  # a frozen copy of the initial student
    old = make_ema(student)
    disc = Discriminator(cfg.disc.model).to(device)
    models = Models(student=student, old=old, ref=ref, disc=disc, codec=make_codec(student.config))
    method = method_class(cfg.train.method)(cfg, models, judge)
    parallel = StudentParallel(cfg.dist, device)
    parallel.prepare(student)
    t = cfg.train
    opt_s = make_optimizer(t.optimizer, [p for p in student.parameters() if p.requires_grad], t.lr, t.betas,
                           t.weight_decay)
    opt_d = make_optimizer(t.optimizer, disc.trainable_parameters(), cfg.disc.lr, cfg.disc.betas, cfg.disc.weight_decay)
    # The text encoder loads last, after every random initialisation above (as it always has).
    bundle = Student.wrap(student, codec=models.codec)
    check_disc_fits(cfg.disc.model, bundle)
    return RunParts(bundle, models, method, opt_s, opt_d, base_dir, file_sha256(base_dir / "model.safetensors"),
                    parallel)
