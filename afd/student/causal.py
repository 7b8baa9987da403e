"""The half of the ``StudentModel`` protocol every block-causal backbone shares.

A backbone implements one core, ``_run(x, t, frames, clean, text, cache, features)``, over frame
slots that each carry a frame index and a clean flag (the attention rule of
``afd.student.mask``). The three views of the protocol differ only in which slots they pass:

- ``forward``: frames following the cached ones, all clean or all noised;
- ``forward_train``: ``[clean | noised]`` copies of the whole clip, each copy at its frame's index;
- ``forward_with_prefix``: a clean prefix and noised frames after it, without a cache;
- ``forward_noised_context``: the whole noised clip, block-causal (Astrolabe's training view).

Persistence (``save_pretrained`` / ``from_pretrained``: safetensors + a JSON config with the
backbone's ``FORMAT`` tag) is the same for every backbone too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from afd.config import config_from_dict, config_to_dict
from afd.student.cache import KVCache
from afd.text.encoder import TextEncoding

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class BlockCausalModel:
    """Mixin for an ``nn.Module`` backbone; the subclass sets ``FORMAT`` (its config.json tag),
    ``CONFIG`` (its config dataclass, with ``CHECKPOINT_MAY_OMIT``) and implements ``_run``."""

    FORMAT: str
    CONFIG: type

    def _run(self, x: torch.Tensor, t: torch.Tensor, frames: torch.Tensor, clean: torch.Tensor,
             text: TextEncoding, cache: KVCache | None, features: bool = False):
        """x: (B, slots, C, H, W); t: (B, slots); frames/clean: (slots,) long/bool. Returns raw
        predictions (B, slots, C, H, W) float32 and per-layer (keys, values) of x's tokens; with
        ``features`` also the last layer's tokens (B, slots * tokens_per_frame, dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: TextEncoding, cache: KVCache | None = None,
                *, clean: bool = False) -> tuple[torch.Tensor, KVCache | None]:
        """Run frames that follow the cached ones.

        x: (B, T, C, H, W) frames number ``cache.next_frame ..`` (model space); t: (B, T) or (B,)
        noise levels in [0, 1]. ``clean=True`` marks x as clean context (normally t = 0): its
        frames attend block-causally to each other and the returned cache is extended with their
        keys/values. ``clean=False``: x holds noised frames of one or more blocks, each seeing
        the cached clean frames of earlier blocks and its own block; the cache is returned
        unchanged. Returns (raw prediction (B, T, C, H, W) float32, cache).
        """
        B, T = x.shape[:2]
        self._check_input(x, text)
        t = t.expand(B, T) if t.dim() == 2 else t[:, None].expand(B, T)
        n_past = cache.n_frames if cache is not None else 0
        if cache is not None and n_past % self.config.block_frames:
            raise ValueError(f"cache holds {n_past} frames, "
                             f"not a whole number of {self.config.block_frames}-frame blocks")
        if cache is not None and self.config.rolls() and T > self.config.block_frames:
            # The cache does not say which blocks it holds, so only one block's window is known.
            raise ValueError(f"a rolling cache serves one {self.config.block_frames}-frame block per call, "
                             f"got {T} frames")
        start = cache.next_frame if cache is not None else 0
        frames = torch.arange(start, start + T, device=x.device)
        flags = torch.full((T,), clean, dtype=torch.bool, device=x.device)
        out, k, v = self._run(x, t, frames, flags, text, cache)
        if clean:
            cache = (cache or KVCache.empty()).extended(k, v, T, last_frame=x[:, -1])
        return out, cache

    def forward_train(self, x_clean: torch.Tensor, x_noised: torch.Tensor, t: torch.Tensor,
                      text: TextEncoding, *, return_features: bool = False):
        """Teacher-forced view of a whole clip in one pass: the sequence ``[clean | noised]``.

        x_clean, x_noised: (B, T, C, H, W); t: (B, T) noise level of each noised frame (constant
        within a block). Noised block k sees clean blocks < k and itself, exactly what the
        rollout shows it at inference. Returns the raw prediction for the noised frames; with
        ``return_features`` also the last layer's tokens of the noised frames (B, T * tokens, dim)
        (a feature extractor for critics built on the student architecture).
        """
        B, T = x_clean.shape[:2]
        self._check_input(x_noised, text)
        F_ = self.config.block_frames
        # Past the model's length, or with a window shorter than the clip's context: each block
        # sees what the rollout's rolling window showed it. A rolling cache's window is a mask
        # (``window_rule``), so that view stays one pass.
        if not self.config.rolls() and (T > self.config.frames or (T // F_ - 1) * F_ > self.config.context_window()):
            if return_features:
                raise ValueError(f"features of a {T}-frame clip: the feature view covers at most the model's "
                                 f"{self.config.frames} frames")
            return self._forward_train_streamed(x_clean, x_noised, t, text)
        x = torch.cat([x_clean, x_noised], dim=1)
        tt = torch.cat([torch.zeros_like(t), t], dim=1)
        frames = torch.arange(T, device=x.device).repeat(2)
        flags = torch.cat([torch.ones(T, dtype=torch.bool, device=x.device),
                           torch.zeros(T, dtype=torch.bool, device=x.device)])
        # Copies, not slices: a view returned by an FSDP2-wrapped model would lose its all-gather
        # hook under an in-place op.
        if return_features:
            out, _, _, feats = self._run(x, tt, frames, flags, text, None, features=True)
            return out[:, T:].clone(), feats[:, feats.shape[1] // 2:].clone()
        out, _, _ = self._run(x, tt, frames, flags, text, None)
        return out[:, T:].clone()

    def _forward_train_streamed(self, x_clean: torch.Tensor, x_noised: torch.Tensor, t: torch.Tensor,
                                text: TextEncoding) -> torch.Tensor:
        """``forward_train`` of a clip longer than the model (a streamed rollout): what each block
        saw when the rollout made it (``afd.student.rollout.context_blocks``). The blocks whose
        context is every earlier block take the one-pass view; each later block is a cache-free
        pass over its window's clean frames, re-indexed, then its noised frames, all such blocks
        stacked in one batch."""
        from afd.student.rollout import context_blocks

        cfg = self.config
        F_, T = cfg.block_frames, x_clean.shape[1]
        if T % F_:
            raise ValueError(f"a {T}-frame clip is not a whole number of {F_}-frame blocks")
        K = T // F_
        head = next(k for k in range(K + 1) if k == K or context_blocks(k, cfg) != list(range(k)))
        out = [self.forward_train(x_clean[:, :head * F_], x_noised[:, :head * F_], t[:, :head * F_], text)]
        tail = list(range(head, K))
        if tail:
            B = x_clean.shape[0]
            blocks = x_clean.unflatten(1, (K, F_))
            prefix = torch.cat([blocks[:, context_blocks(k, cfg)].flatten(1, 2) for k in tail])
            noised = torch.cat([x_noised[:, k * F_:(k + 1) * F_] for k in tail])
            tt = torch.cat([t[:, k * F_:(k + 1) * F_] for k in tail])
            rows = text.index(torch.arange(B).repeat(len(tail)))
            pred = self.forward_with_prefix(prefix, noised, tt, rows)  # (len(tail) * B, F, ...)
            out.append(pred.unflatten(0, (len(tail), B)).transpose(0, 1).flatten(1, 2))
        return torch.cat(out, dim=1)

    def forward_noised_context(self, x_noised: torch.Tensor, t: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        """Astrolabe's training view of a whole noised clip: block k attends to the *noised*
        blocks < k and itself, each frame at its own level t (B, T). Not what the rollout shows
        (its context is clean): an option of the paper's NFT (``afd.context=noised``,
        docs/recipe.md). With a rolling cache (``window_rule``) each block sees its window only.
        Returns the raw prediction (B, T, C, H, W)."""
        if getattr(self.config, "refine", 0):
            raise ValueError("the noised-context view needs a backbone without a refine head (refine=0): "
                             "the head reads the newest clean frame, which this view does not have")
        T = x_noised.shape[1]
        self._check_input(x_noised, text)
        frames = torch.arange(T, device=x_noised.device)
        # Every slot flagged clean gives the block-causal rule among the slots themselves.
        flags = torch.ones(T, dtype=torch.bool, device=x_noised.device)
        out, _, _ = self._run(x_noised, t, frames, flags, text, None)
        return out

    def forward_with_prefix(self, prefix: torch.Tensor | None, x_noised: torch.Tensor, t: torch.Tensor,
                            text: TextEncoding) -> torch.Tensor:
        """Cache-free view: clean prefix (B, n, C, H, W) and the noised frames after it, one pass.

        The same attention rule as the cached path, recomputing the prefix's keys/values.
        Returns the raw prediction for ``x_noised`` (B, T, C, H, W).
        """
        if prefix is None:
            return self(x_noised, t, text)[0]
        B, n = prefix.shape[:2]
        T = x_noised.shape[1]
        if n % self.config.block_frames:
            raise ValueError(f"prefix of {n} frames is not a whole number of {self.config.block_frames}-frame blocks")
        self._check_input(prefix, text)
        self._check_input(x_noised, text)
        x = torch.cat([prefix, x_noised], dim=1)
        tt = torch.cat([torch.zeros(B, n, device=x.device),
                        t.expand(B, T) if t.dim() == 2 else t[:, None].expand(B, T)], dim=1)
        frames = torch.arange(n + T, device=x.device)
        flags = torch.cat([torch.ones(n, dtype=torch.bool, device=x.device),
                           torch.zeros(T, dtype=torch.bool, device=x.device)])
        out, _, _ = self._run(x, tt, frames, flags, text, None)
        return out[:, n:].clone()  # a copy, as in forward_train

    def window_rule(self) -> tuple[int, bool] | None:
        """The attention window of a cache-free pass, (W in blocks, sink), when the rollout keeps
        a rolling cache (``stream_cache`` "roll"): each frame then attends only to its own
        block's window, at its clip index, as the rollout's cache showed it. None otherwise (a
        re-encoded window is its own pass)."""
        cfg = self.config
        return (cfg.context_window() // cfg.block_frames, cfg.sink) if cfg.rolls() else None

    def _check_input(self, x: torch.Tensor, text: TextEncoding) -> None:
        cfg = self.config
        if x.dim() != 5 or tuple(x.shape[2:]) != (cfg.channels, cfg.height, cfg.width):
            raise ValueError(f"student input must be (B, T, {cfg.channels}, {cfg.height}, {cfg.width}), "
                             f"got {tuple(x.shape)}")
        if len(text) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} clips but {len(text)} prompt encodings")

    # ----- persistence -----
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (plus ``extra`` under "extra") atomically."""
        from afd.io_utils import atomic_write_text, save_safetensors_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}
        save_safetensors_atomic(state, directory / WEIGHTS_FILE)
        meta = {"format": self.FORMAT, "config": config_to_dict(self.config), "extra": extra or {}}
        atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def read_config(cls, directory: str | Path):
        """The config saved in ``directory/config.json`` (an error naming the file if it is not
        this backbone's, or leaves out a field its ``CHECKPOINT_MAY_OMIT`` does not allow)."""
        from afd.io_utils import read_pretrained_meta

        meta = read_pretrained_meta(directory, cls.FORMAT, "student checkpoint", CONFIG_FILE)
        return config_from_dict(cls.CONFIG, meta["config"], source=str(Path(directory) / CONFIG_FILE),
                                may_omit=cls.CONFIG.CHECKPOINT_MAY_OMIT)

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        """Load a backbone saved by ``save_pretrained``, strictly, in eval mode (never unpickles)."""
        from afd.io_utils import load_safetensors_checked

        model = cls(cls.read_config(directory))
        load_safetensors_checked(model, Path(directory) / WEIGHTS_FILE)
        return model.eval()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
