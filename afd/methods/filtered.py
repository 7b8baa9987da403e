"""The reward-filtered update (``afd.update=reward-filtered``): on-policy rejection-sampling
fine-tuning. Of each prompt's G rollouts the ``top_k`` with the largest weights are kept, and the
student trains on them with SFT's own loss (teacher-forced flow matching, each kept rollout its
own clean context and target), plus the unweighted prior toward the frozen initial student.
Unlike NFT on forward-noised copies, which moves a prompt's rollouts by one group-averaged shift,
each kept rollout pulls the student toward its own trajectory."""

from __future__ import annotations

import torch

from afd.losses import fm_error, forward_noise, velocity
from afd.methods.afd_config import AFDMethodConfig
from afd.student.base import StudentModel
from afd.text.encoder import TextEncoding

WEIGHTING = "x0"  # SFT's and pretraining's: the t^2-weighted velocity error, i.e. the x0 error


def top_k_per_group(weights: torch.Tensor, group_ids: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (sorted) of the ``k`` largest weights within each group of ``group_ids`` (B,); ties
    go to the earlier rollout. A group smaller than k keeps all of its rollouts."""
    keep = []
    for g in torch.unique(group_ids):
        idx = torch.nonzero(group_ids == g).squeeze(1)
        order = torch.sort(weights[idx].detach().float().cpu(), descending=True, stable=True).indices
        keep.append(idx[order[:k].to(idx.device)])
    return torch.sort(torch.cat(keep)).values


def reward_filtered_loss(model: StudentModel, ref_model: StudentModel | None, x0_rollouts: torch.Tensor,
                         text: TextEncoding, w: torch.Tensor, group_ids: torch.Tensor, generator: torch.Generator,
                         cfg: AFDMethodConfig, *, first_frame: int = 0) -> dict[str, torch.Tensor]:
    """SFT's loss on the top ``cfg.top_k`` rollouts of each prompt by weight ``w`` (B,) in [0, 1].

    x0_rollouts: (B, T, C, H, W) in the model's space (detached here); group_ids: (B,) prompt index
    per rollout; ``first_frame``: the loss covers frames from there on (a prefix group's shared
    frames are left out). Returns ``loss`` (with gradient) and detached ``loss_fm``, ``loss_prior``,
    ``kept_weight`` (the mean weight of the kept rollouts)."""
    keep = top_k_per_group(w, group_ids, cfg.top_k)
    x0 = x0_rollouts.detach()[keep]
    text = text.index(keep.cpu())
    t, eps, x_t = forward_noise(x0, model.config, generator, cfg.t_shift)
    v_hat = velocity(model, x0, x_t, t, text)
    f = slice(first_frame, None)
    loss_fm = fm_error(v_hat[:, f], (eps - x0)[:, f], t[:, f], WEIGHTING).mean()
    loss = loss_fm
    out = {"loss_fm": loss_fm.detach(), "kept_weight": w[keep].detach().float().mean()}
    if ref_model is not None and cfg.lambda_prior > 0:
        with torch.no_grad():
            v_ref = velocity(ref_model, x0, x_t, t, text)
        loss_prior = (v_hat - v_ref).pow(2).mean()
        loss = loss + cfg.lambda_prior * loss_prior
        out["loss_prior"] = loss_prior.detach()
    out["loss"] = loss
    return out
