"""The world's prompt grammar: words, their meanings, and the parser.

The grammar is data (``data/grammar_v1.json``); this module only loads it and parses
prompts into attributes. It is used by the world and by evaluation, never by a student
(students read prompts as plain text, so paraphrases are legal student inputs).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

GRAMMAR_VERSION = 1
PLAIN = "plain"  # the rendering of a prompt that names no style: the original domain


class PromptError(ValueError):
    """A prompt that the world's grammar cannot parse; the message names the bad word."""


@dataclass(frozen=True)
class Grammar:
    template: str
    sizes: dict[str, float]  # radius (or half side) as a fraction of the frame height
    colors: dict[str, tuple[int, int, int]]  # RGB 0-255
    backgrounds: dict[str, tuple[int, int, int]]
    objects: dict[str, tuple[str, ...]]  # object -> domains it may appear in
    motions: dict[str, str]  # motion phrase -> "physics" | "general"
    styles: tuple[str, ...] = ()  # rendering styles a prompt may name; none named = PLAIN
    style_suffix: str = "in {style} style"

    def physics_motions(self) -> list[str]:
        return [m for m, d in self.motions.items() if d == "physics"]

    def general_motions(self) -> list[str]:
        return [m for m, d in self.motions.items() if d == "general"]


@dataclass(frozen=True)
class PromptAttrs:
    """A parsed prompt. ``domain`` is the motion's domain: "physics" or "general"; ``style`` is the
    rendering (``PLAIN`` unless the prompt ends with the style suffix, e.g. "in cartoon style")."""

    size: str
    color: str
    object: str
    motion: str
    background: str
    style: str = PLAIN

    @property
    def domain(self) -> str:
        return grammar().motions[self.motion]

    @property
    def text(self) -> str:
        g = grammar()
        text = g.template.format(
            size=self.size, color=self.color, object=self.object,
            motion=self.motion, background=self.background,
        )
        return text if self.style == PLAIN else f"{text} {g.style_suffix.format(style=self.style)}"

    @property
    def plain_text(self) -> str:
        """The same prompt without its style: what the clip's physics is drawn from."""
        return replace(self, style=PLAIN).text


@lru_cache(maxsize=1)
def grammar() -> Grammar:
    raw = json.loads(resources.files("afd.world").joinpath("data/grammar_v1.json").read_text())
    if raw["version"] != GRAMMAR_VERSION:
        raise RuntimeError(f"grammar file version {raw['version']} != code version {GRAMMAR_VERSION}")
    return Grammar(
        template=raw["template"],
        sizes={k: float(v) for k, v in raw["sizes"].items()},
        colors={k: tuple(v) for k, v in raw["colors"].items()},
        backgrounds={k: tuple(v) for k, v in raw["backgrounds"].items()},
        objects={k: tuple(v) for k, v in raw["objects"].items()},
        motions=dict(raw["motions"]),
        styles=tuple(raw.get("styles", ())),
        style_suffix=raw.get("style_suffix", "in {style} style"),
    )


def grammar_words() -> list[str]:
    """Every word of the grammar (template, sizes, colours, objects, motions, backgrounds),
    lower-cased, each once, in that fixed order: a vocabulary that covers every world prompt."""
    g = grammar()
    phrases = [re.sub(r"\{\w+\}", " ", g.template), *g.sizes, *g.colors, *g.objects, *g.motions, *g.backgrounds,
               re.sub(r"\{\w+\}", " ", g.style_suffix), *g.styles]
    return list(dict.fromkeys(w for phrase in phrases for w in phrase.lower().split()))


def _take(rest: str, options, slot: str, prompt: str) -> tuple[str, str]:
    """Consume the longest option that ``rest`` starts with (options may hold spaces)."""
    for opt in sorted(options, key=len, reverse=True):
        if rest == opt or rest.startswith(opt + " "):
            return opt, rest[len(opt):].lstrip()
    word = rest.split(" ")[0] if rest else "<end of prompt>"
    valid = ", ".join(repr(o) for o in options)
    raise PromptError(f"prompt {prompt!r}: unknown {slot} {word!r}; valid {slot}s: {valid}")


def _expect(rest: str, literal: str, prompt: str) -> str:
    if rest == literal or rest.startswith(literal + " "):
        return rest[len(literal):].lstrip()
    word = rest.split(" ")[0] if rest else "<end of prompt>"
    raise PromptError(
        f"prompt {prompt!r}: expected {literal!r} but found {word!r}; "
        f"prompts follow {grammar().template!r}"
    )


def parse_prompt(prompt: str) -> PromptAttrs:
    """Parse a world prompt (case and surrounding white space ignored, optional final '.').

    Raises PromptError naming the first unknown word and the valid words for its slot.
    """
    g = grammar()
    text = " ".join(prompt.strip().lower().rstrip(".").split())
    rest = _expect(text, "a", prompt)
    size, rest = _take(rest, g.sizes, "size", prompt)
    color, rest = _take(rest, g.colors, "color", prompt)
    obj, rest = _take(rest, g.objects, "object", prompt)
    motion, rest = _take(rest, g.motions, "motion", prompt)
    rest = _expect(rest, "on", prompt)
    rest = _expect(rest, "a", prompt)
    background, rest = _take(rest, g.backgrounds, "background", prompt)
    rest = _expect(rest, "background", prompt)
    style = PLAIN
    if rest:
        head, _, tail = g.style_suffix.partition("{style}")
        head, tail = head.strip(), tail.strip()
        if not g.styles or not (rest == head or rest.startswith(head + " ")):
            if not g.styles:
                raise PromptError(f"prompt {prompt!r}: unexpected trailing words {rest!r}")
            raise PromptError(f"prompt {prompt!r}: unexpected trailing words {rest!r}; a prompt may end with "
                              f"{g.style_suffix!r} ({g.style_suffix.format(style=g.styles[0])!r})")
        style, rest = _take(rest[len(head):].lstrip(), g.styles, "style", prompt)
        rest = _expect(rest, tail, prompt)
        if rest:
            raise PromptError(f"prompt {prompt!r}: unexpected trailing words {rest!r}")
    domain = g.motions[motion]
    if domain not in g.objects[obj]:
        allowed = [o for o, d in g.objects.items() if domain in d]
        raise PromptError(
            f"prompt {prompt!r}: object {obj!r} cannot take the {domain} motion {motion!r}; "
            f"{domain} motions take: {', '.join(allowed)}"
        )
    return PromptAttrs(size, color, obj, motion, background, style)


def with_style(prompt: str, style: str) -> str:
    """``prompt`` (a world prompt) rendered in ``style`` (``PLAIN`` drops its style), normalised."""
    if style != PLAIN and style not in grammar().styles:
        raise PromptError(f"unknown style {style!r}; valid styles: {', '.join((PLAIN, *grammar().styles))}")
    return replace(parse_prompt(prompt), style=style).text


def all_prompts(domain: str | None = None) -> list[str]:
    """Every plain-style prompt the grammar allows, in a fixed order; optionally one domain only
    (a styled prompt is any of these with ``with_style``)."""
    g = grammar()
    out = []
    for obj, size, color, motion, bg in itertools.product(
        g.objects, g.sizes, g.colors, g.motions, g.backgrounds
    ):
        d = g.motions[motion]
        if d not in g.objects[obj] or (domain is not None and d != domain):
            continue
        out.append(PromptAttrs(size, color, obj, motion, bg).text)
    return out
