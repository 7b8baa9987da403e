"""A UMT5 encoder (Wan's text encoder) read from a local directory, behind the text-encoder interface.

The directory holds transformers' ``UMT5EncoderModel`` and its tokenizer, either side by side or
in diffusers' Wan pipeline layout (``text_encoder/`` and ``tokenizer/`` subfolders). Nothing is
downloaded: both load with ``local_files_only=True``. ``dim`` is the model's ``d_model`` (4096
for Wan's umt5-xxl), so the encodings' shape is set by the encoder, not fixed.

As in Wan's pipeline, prompts are padded to ``max_tokens`` and the states of padding are zero;
``pooled`` is the masked mean of the token states, L2-normalised (UMT5 has no pooled output).
"""

from __future__ import annotations

from pathlib import Path

import torch

from afd.text.encoder import CachedTextEncoder

DEFAULT_MAX_TOKENS = 512  # Wan's text length


def umt5_parts(path: str | Path) -> tuple[Path, Path]:
    """(tokenizer folder, model folder) of a UMT5 directory in either layout."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such UMT5 text encoder directory")
    if (path / "text_encoder").is_dir() and (path / "tokenizer").is_dir():
        return path / "tokenizer", path / "text_encoder"
    return path, path


class UMT5TextEncoder(CachedTextEncoder):
    """Frozen UMT5 encoder: prompts -> (B, max_tokens, d_model) token states; CPU, float32."""

    name = "umt5"

    def __init__(self, path: str | Path, max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        from transformers import AutoTokenizer, UMT5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # as MiniLM's loader: no progress bars or notices in run logs
        hf_logging.disable_progress_bar()
        tok_dir, model_dir = umt5_parts(path)
        # Loading a frozen encoder must not move the training's random stream.
        with torch.random.fork_rng(devices=[]):
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
                self.model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a UMT5 encoder with its tokenizer ({e})") from None
        self.model.eval().requires_grad_(False)
        self.path = str(path)
        self.dim = int(self.model.config.d_model)
        self.max_tokens = int(max_tokens)

    def _states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_tokens,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return states.float(), batch["attention_mask"].bool()
