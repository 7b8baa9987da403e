"""Fixed, versioned prompt splits.

The splits are committed data (``data/splits_v1/*.txt``, one prompt per line). ``build_splits``
is the recipe that made them; a test checks that the files still equal its output, so a change
to the recipe or the grammar must bump the version instead of silently moving prompts.

Recipe (v1):
- physics-train (200): physics prompts, never using one of six held-out (colour, motion)
  pairs, so evaluation includes combinations never seen in adaptation;
- physics-eval (48): 24 prompts from the held-out pairs + 24 other physics prompts, all
  disjoint from physics-train;
- general-eval (48): general-domain prompts (balls and squares);
- pretrain (the rest): every prompt of the grammar that is in neither eval split (it includes
  physics-train: the base student has seen those prompts, with loose physics);
- physics-val (48) and general-val (48): prompts of the same kinds, disjoint from physics-train and
  both eval splits (drawn after them, so adding them moved no prompt of the splits above). Tuning
  (a baseline's learning rate) reads these, so the eval splits stay untouched by any choice.
- style-train (200) and style-eval (96): the second domain (docs/world-and-eval.md, "The cartoon
  style"), prompts ending "in cartoon style". style-eval is physics-eval and general-eval in that
  style, so each stylised eval prompt has its plain twin; style-train is 140 physics-train and 60
  general prompts in that style, the general ones outside every eval and val split. Drawn with
  their own seed, so adding them moved no prompt of the splits above.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from afd.world.grammar import all_prompts, parse_prompt, with_style

SPLITS_VERSION = 1
SPLIT_NAMES = ("physics-train", "physics-eval", "general-eval", "pretrain", "physics-val", "general-val",
               "style-train", "style-eval")
STYLE = "cartoon"  # the style of the second domain's splits
HELD_OUT_PAIRS = (
    ("cyan", "falls"),
    ("orange", "is thrown to the left"),
    ("magenta", "is thrown to the right"),
    ("yellow", "is tossed upward"),
    ("white", "rolls to the left"),
    ("green", "rolls to the right"),
)
_RECIPE_SEED = 20261121
_STYLE_RECIPE_SEED = 20261206


def build_splits() -> dict[str, list[str]]:
    """Recompute the v1 splits from the grammar (deterministic)."""
    rng = np.random.default_rng(_RECIPE_SEED)
    physics = all_prompts("physics")
    general = all_prompts("general")
    held = [p for p in physics if (lambda a: (a.color, a.motion) in HELD_OUT_PAIRS)(parse_prompt(p))]
    other = [p for p in physics if p not in set(held)]
    other = [other[i] for i in rng.permutation(len(other))]
    held = [held[i] for i in rng.permutation(len(held))]
    train = sorted(other[:200])
    phys_eval = sorted(held[:24] + other[200:224])
    gen = [general[i] for i in rng.permutation(len(general))]
    gen_eval = sorted(gen[:48])
    eval_set = set(phys_eval) | set(gen_eval)
    pretrain = [p for p in all_prompts() if p not in eval_set]
    splits = {
        "physics-train": train,
        "physics-eval": phys_eval,
        "general-eval": gen_eval,
        "pretrain": pretrain,
        "physics-val": sorted(other[224:272]),
        "general-val": sorted(gen[48:96]),
    }
    style_rng = np.random.default_rng(_STYLE_RECIPE_SEED)
    gen_free = gen[96:]  # general prompts in no eval or val split
    style_train = ([train[i] for i in style_rng.permutation(len(train))[:140]]
                   + [gen_free[i] for i in style_rng.permutation(len(gen_free))[:60]])
    splits["style-train"] = sorted(with_style(p, STYLE) for p in style_train)
    splits["style-eval"] = sorted(with_style(p, STYLE) for p in phys_eval + gen_eval)
    return splits


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[str, ...]:
    path = resources.files("afd.world").joinpath(f"data/splits_v{SPLITS_VERSION}/{name}.txt")
    return tuple(line for line in path.read_text().splitlines() if line.strip())


def load_split(name: str) -> list[str]:
    """Prompts of a named split, in their committed order."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(SPLIT_NAMES)}")
    return list(_load(name))


def write_splits(directory) -> None:
    """Write ``build_splits()`` as text files (used once to create a new version)."""
    from pathlib import Path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, prompts in build_splits().items():
        (d / f"{name}.txt").write_text("\n".join(prompts) + "\n")
