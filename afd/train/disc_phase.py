"""The discriminator's part of an iteration: n_D steps on prompt-paired (teacher, rollout) clips,
then scoring the rollouts for the method (docs/method.md section 4)."""

from __future__ import annotations

import functools

import torch

from afd import dist
from afd.device import AmpSetting, autocast
from afd.disc.augment import augment_pair
from afd.disc.losses import bt_loss, gan_loss, pairwise_accuracy, r1_penalty, r_phi
from afd.rollout_groups import per_rollout, rollouts_per_prompt
from afd.text.encoder import TextEncoding
from afd.train.config import DiscTrainConfig

LOSSES = {"bt": bt_loss, "gan": gan_loss}
SATURATED = 0.01  # a pair with sigmoid(d_S - d_T) below this gives BT almost no gradient


def _loss_fn(cfg: DiscTrainConfig):
    return functools.partial(LOSSES[cfg.loss], smoothing=cfg.label_smoothing)


class ReplayBuffer:
    """Past prompt groups D trained on: each a teacher clip, its G rollouts (as D saw them, after
    any re-rendering) and the prompt's encoding, kept first in, first out up to ``capacity`` groups.

    Each D step adds up to as many replayed groups as the batch has prompts, drawn uniformly with
    the step's generator, so D keeps being asked about the student's earlier behaviour instead of
    only its latest rollouts. Clips are stored in float16 (in [-1, 1], 1e-3 steps), which is also
    what ``state_dict`` saves, so a resumed run replays exactly what an unbroken one would.
    Local to a rank: with several ranks each keeps its own prompt shard's groups."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"disc.replay must be >= 1 to make a replay buffer, got {capacity}")
        self.capacity = capacity
        self.teacher: torch.Tensor | None = None  # (K, T, 3, H, W) float16
        self.rollouts: torch.Tensor | None = None  # (K, G, T, 3, H, W) float16
        self.text: TextEncoding | None = None  # K encodings

    def __len__(self) -> int:
        return 0 if self.teacher is None else self.teacher.shape[0]

    def add(self, teacher: torch.Tensor, rollouts: torch.Tensor, text: TextEncoding) -> None:
        """Append P groups (teacher (P, ...), rollouts (P * G, ...), text: P encodings), dropping
        the oldest beyond ``capacity``."""
        P = teacher.shape[0]
        G = rollouts_per_prompt(P, rollouts.shape[0])
        t = teacher.detach().to("cpu", torch.float16)
        r = rollouts.detach().to("cpu", torch.float16).reshape(P, G, *rollouts.shape[1:])
        text = text.to("cpu")
        if self.teacher is not None:
            if r.shape[1:] != self.rollouts.shape[1:]:
                raise ValueError(f"replay: rollout groups of shape {tuple(r.shape[1:])} cannot join a buffer of "
                                 f"{tuple(self.rollouts.shape[1:])}")
            t, r, text = torch.cat([self.teacher, t]), torch.cat([self.rollouts, r]), self.text.cat(text)
        keep = slice(max(0, t.shape[0] - self.capacity), None)
        self.teacher, self.rollouts, self.text = t[keep], r[keep], text.index(keep)

    def sample(self, n: int, generator: torch.Generator, like: torch.Tensor):
        """min(n, len) groups without replacement: teacher (m, ...), rollouts (m * G, ...) in the
        dtype and device of ``like``, and their m encodings; None when the buffer is empty."""
        m = min(n, len(self))
        if m == 0:
            return None
        idx = torch.randperm(len(self), generator=generator)[:m]
        r = self.rollouts[idx]
        return (self.teacher[idx].to(like.device, like.dtype), r.reshape(-1, *r.shape[2:]).to(like.device, like.dtype),
                self.text.index(idx).to(like.device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        return {"teacher": self.teacher, "rollouts": self.rollouts, "tokens": self.text.tokens,
                "mask": self.text.mask, "pooled": self.text.pooled}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            self.teacher = self.rollouts = self.text = None
            return
        missing = {"teacher", "rollouts", "tokens", "mask", "pooled"} - set(tensors)
        if missing:
            raise ValueError(f"replay buffer state lacks {sorted(missing)}")
        self.teacher, self.rollouts = tensors["teacher"].to(torch.float16), tensors["rollouts"].to(torch.float16)
        self.text = TextEncoding(tensors["tokens"], tensors["mask"].bool(), tensors["pooled"])
        if len(self) > self.capacity:
            self.load_state_dict({k: v[-self.capacity:] for k, v in tensors.items()})


@torch.no_grad()
def rerender(ref, codec, clips: torch.Tensor, text: TextEncoding, t: float, generator: torch.Generator,
             amp: AmpSetting = False) -> torch.Tensor:
    """Clips as the frozen reference student draws them: noise each clip to level ``t`` and take
    the reference's x0 estimate, block k seeing the clean blocks < k (``forward_train``).

    clips: (B, T, 3, H, W) in [-1, 1]; text: their B encodings. ``t`` in (0, 1): low keeps the
    clip's own rendering, high forgets its motion too. Returns (B, T, 3, H, W) in [-1, 1].
    Teacher clips and rollouts re-rendered alike carry the same rendering artefacts, so a
    discriminator trained on them has to separate the two by what survives the noise: where the
    object is, frame by frame (a conv D trained without it keyed on the student's artefacts instead)."""
    x = codec.encode(clips.float())
    tt = torch.full(x.shape[:2], float(t), device=x.device)
    eps = dist.rank_rows(lambda m: torch.randn((m, *x.shape[1:]), generator=generator), x.shape[0])
    x_t = (1 - t) * x + t * eps.to(x.device)
    with autocast(x, amp):  # ref may be a LoRA view (AdaptersOff) without parameters of its own
        v = ref.to_velocity(ref.forward_train(x, x_t, tt, text), x_t, tt).float()
    return codec.decode(x_t - t * v).clamp(-1, 1)


def rerender_pair(ref, codec, teacher: torch.Tensor, rollouts: torch.Tensor, text: TextEncoding, t: float,
                  generator: torch.Generator, amp: AmpSetting = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``rerender`` both sides of prompt-paired clips: teacher (P, ...) with the P encodings
    ``text``, rollouts (P * G, ...) with each encoding repeated G times. ``t`` <= 0 returns them
    unchanged (``disc.rerender_t`` off)."""
    if t <= 0:
        return teacher, rollouts
    G = rollouts_per_prompt(teacher.shape[0], rollouts.shape[0])
    return (rerender(ref, codec, teacher, text, t, generator, amp),
            rerender(ref, codec, rollouts, per_rollout(text, G), t, generator, amp))


def train_discriminator(disc, opt: torch.optim.Optimizer, cfg: DiscTrainConfig, teacher: torch.Tensor,
                        student: torch.Tensor, prompts: list[str], text: TextEncoding,
                        generator: torch.Generator, amp: AmpSetting = False,
                        replay: ReplayBuffer | None = None) -> dict[str, float]:
    """``cfg.steps`` optimizer steps of the D loss (``cfg.loss``, ``cfg.label_smoothing``) on the
    full local batch, plus groups replayed from ``replay`` (which then receives this batch).

    teacher: (P, T, 3, H, W) one clip per prompt; student: (P * G, T, 3, H, W), G rollouts per
    prompt in consecutive rows; both [-1, 1], detached. text: the P prompt encodings. Each step
    mirrors pairs left/right (``augment_pair``, never prompts with a direction) when
    ``cfg.augment``. With lr 0 or 0 steps D stays frozen. Returns d_loss (mean over steps),
    d_acc_train (pairwise accuracy of the last step, on augmented clips), d_grad_norm and r1.
    Replayed groups are never mirrored (their prompt strings are not kept).
    """
    if cfg.steps == 0 or cfg.lr == 0:
        return {}
    G = rollouts_per_prompt(teacher.shape[0], student.shape[0])
    loss_fn = _loss_fn(cfg)
    disc.train()
    losses, acc, gn, r1 = [], 0.0, 0.0, 0.0
    for _ in range(cfg.steps):
        if cfg.augment:
            t_x, s_x, _ = augment_pair(teacher, student, prompts, generator)
        else:
            t_x, s_x = teacher, student
        step_text = text
        old = replay.sample(teacher.shape[0], generator, teacher) if replay is not None else None
        if old is not None:
            t_x, s_x, step_text = torch.cat([t_x, old[0]]), torch.cat([s_x, old[1]]), text.cat(old[2])
        text_s = per_rollout(step_text, G)
        if cfg.r1_gamma > 0:
            t_x = t_x.clone().requires_grad_(True)
        with autocast(disc, amp):
            d_t = disc(t_x, step_text).float()
            d_s = disc(s_x, text_s).float()
        loss = loss_fn(d_t, d_s)
        if cfg.r1_gamma > 0:
            pen = r1_penalty(d_t, t_x)
            loss = loss + 0.5 * cfg.r1_gamma * pen
            r1 = float(pen.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in disc.parameters() if p.requires_grad]
        dist.average_gradients(params)
        gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
        losses.append(float(loss.detach()))
        acc = float(pairwise_accuracy(d_t.detach(), d_s.detach()))
    opt.zero_grad(set_to_none=True)  # nothing of D's update may leak into the student's step
    if replay is not None:
        replay.add(teacher, student, text)
    return {"d_loss": sum(losses) / len(losses), "d_acc_train": acc, "d_grad_norm": gn, "d_r1": r1}


def crop_windows(clips: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """One random window of ``length`` consecutive frames from each clip (N, T, ...), T >= length:
    (N, length, ...). Each start is uniform over the T - length + 1 valid ones, so a window never
    runs past the clip (a teacher-length view of a longer rollout for D)."""
    N, T = clips.shape[:2]
    if not 1 <= length <= T:
        raise ValueError(f"a window of {length} frames does not fit clips of {T}")
    starts = dist.rank_rows(lambda n: torch.randint(0, T - length + 1, (n,), generator=generator), N)
    idx = starts[:, None] + torch.arange(length)
    return clips[torch.arange(N)[:, None], idx.to(clips.device)]


def window_starts(T: int, length: int) -> list[int]:
    """Starts of the fewest teacher-length windows that cover a T-frame clip, evenly spread from
    the first frame to the last (non-overlapping when ``length`` divides T)."""
    if not 1 <= length <= T:
        raise ValueError(f"a window of {length} frames does not fit clips of {T}")
    n = -(-T // length)
    return [round(i * (T - length) / (n - 1)) for i in range(n)] if n > 1 else [0]


def windowed_logits(disc, clips: torch.Tensor, text: TextEncoding, length: int) -> torch.Tensor:
    """D's logit of clips (N, T, ...) longer than what it compares: the mean of its logits over
    ``window_starts`` windows, (N,)."""
    starts = window_starts(clips.shape[1], length)
    return torch.stack([disc(clips[:, s:s + length], text).float() for s in starts]).mean(0)


@torch.no_grad()
def score_pairs(disc, cfg: DiscTrainConfig, teacher: torch.Tensor, student: torch.Tensor, text: TextEncoding,
                amp: AmpSetting = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """D's logits in eval mode (no instance noise, no augmentation): (P,) teacher, (P * G,) rollouts,
    plus the loss, pairwise accuracy, r_phi = mean sigmoid(D(rollout) - D(teacher)) on them and
    its spread: ``r_phi_p10`` / ``r_phi_p90`` (quantiles over pairs) and ``r_phi_sat`` (the share
    of pairs below ``SATURATED``, where BT's gradient has all but vanished). Rollouts longer
    than the teacher's clips are scored by ``windowed_logits`` (``cfg.window="first"``: by
    their first teacher-length window alone)."""
    G = rollouts_per_prompt(teacher.shape[0], student.shape[0])
    disc.eval()
    with autocast(disc, amp):
        d_t = disc(teacher, text).float()
        if student.shape[1] > teacher.shape[1] and cfg.window == "first":
            d_s = disc(student[:, :teacher.shape[1]], per_rollout(text, G)).float()
        elif student.shape[1] > teacher.shape[1]:
            d_s = windowed_logits(disc, student, per_rollout(text, G), teacher.shape[1])
        else:
            d_s = disc(student, per_rollout(text, G)).float()
    pair = torch.sigmoid(d_s - d_t.repeat_interleave(G))
    q10, q90 = torch.quantile(pair.double(), torch.tensor([0.1, 0.9], dtype=torch.float64, device=pair.device))
    stats = {"d_loss_eval": float(_loss_fn(cfg)(d_t, d_s)), "d_acc": float(pairwise_accuracy(d_t, d_s)),
             "r_phi": float(r_phi(d_t, d_s)), "r_phi_p10": float(q10), "r_phi_p90": float(q90),
             "r_phi_sat": float((pair < SATURATED).double().mean()),
             "d_teacher_mean": float(d_t.mean()), "d_student_mean": float(d_s.mean())}
    return d_t, d_s, stats
