"""AFD: discriminator scores -> per-rollout weights -> DiffusionNFT on the student's own rollouts.

docs/method.md sections 5-6: the weights come from ``compute_weights`` (per-prompt baseline, global
std gathered over ranks, clip, map to [0, 1]); the update is ``nft_student_loss`` (L_NFT plus
lambda_prior times the w-weighted prior toward the frozen initial student) on forward-noised
copies of the rollouts, in the student's space exactly as they were generated. No gradient ever
flows through the rollout or the discriminator. The recipe options (``afd.timesteps``,
``afd.loss_scale``, ``afd.guidance``; docs/recipe.md) change only how that loss is formed.
"""

from __future__ import annotations

import torch

from afd.device import device_of

from afd.losses import Guidance, nft_student_loss, sampler_timesteps
from afd.methods.advantages import compute_weights
from afd.methods.base import Batch, Method, Prepared
from afd.student.sample import guidance_kwargs
from afd import dist


def sampler_guidance(model, n: int) -> Guidance | None:
    """The guidance the model's sampler applies to n clips, as per-frame scales (None: unguided)."""
    kw = guidance_kwargs(model, n)
    if kw["null_text"] is None:
        return None
    cfg = model.config
    scale = torch.full((n, cfg.frames), kw["guidance"], device=device_of(model))
    scale[:, :cfg.block_frames] = kw["first_guidance"]
    return Guidance(kw["null_text"], scale)


class AFD(Method):
    name = "afd"
    uses_rollouts = True
    uses_discriminator = True

    def prepare(self, batch: Batch) -> Prepared:
        adv = compute_weights(batch.d_student, batch.group_ids, self.cfg.afd.advantage, gather=dist.gather_cat)
        return Prepared(weights=adv.weights, stats=adv.summary)

    def student_loss(self, batch: Batch, prepared: Prepared, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.cfg.afd
        m = self.models
        x0, text, w = batch.rollout_latents, batch.rollout_text, prepared.weights.float()
        t = None
        # Which forward-noise draw each sample uses: its own, or its prompt's (afd.noise=group).
        draw = torch.arange(x0.shape[0]) if c.noise == "sample" else torch.unique(batch.group_ids, return_inverse=True)[1]
        if c.timesteps == "sampler":
            # Every rollout once at each of the sampler's levels, all copies in one batch.
            n_draws = int(draw.max()) + 1
            levels = sampler_timesteps(n_draws, m.student.config, generator)[:, draw.cpu()]  # (n, B, T)
            n = levels.shape[0]
            x0, w, t = x0.repeat(n, 1, 1, 1, 1), w.repeat(n), levels.flatten(0, 1)
            text = text.index(torch.arange(len(text)).repeat(n))
            draw = torch.cat([draw + j * n_draws for j in range(n)])
        guidance = sampler_guidance(m.student, x0.shape[0]) if c.guidance == "sampler" else None
        scale = c.advantage.a_max / c.beta if c.loss_scale == "reference" else 1.0
        out = nft_student_loss(m.student, m.old, m.ref, x0, text, w, generator, c.beta, c.lambda_prior,
                               shift=c.t_shift, space=c.nft_space, t=t, guidance=guidance, nft_scale=scale,
                               nft_frames=m.student.config.block_frames if c.nft_blocks == "first" else None,
                               noise_index=None if c.noise == "sample" else draw)
        out.pop("nft_per_sample")
        return out
