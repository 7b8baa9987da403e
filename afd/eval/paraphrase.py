"""Prompts the student was not trained on: eval prompts reworded by hand, scored against the original.

The student reads prompts through a real sentence encoder (MiniLM), so any text is a legal input,
but it was only ever trained on the world grammar's exact wording. This probe asks what a reworded
prompt costs: each pair below is an eval-split prompt and a paraphrase of it written by hand
(synonyms, other word order, "grey" for "gray"; same object, colour, size, motion and background).
Both are sampled with the same seeds and both sets of clips are scored against the *original*
prompt's ground truth, so a paraphrase read as the same scene scores like the original and one
read as another colour, size or direction loses that metric.

    python -m afd.eval.paraphrase --checkpoint base-state --per-prompt 16 --seed 3000

Measured results: reports/paraphrase/report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from afd.eval.compare import HEADLINE, change_lines
from afd.eval.score import evaluate
from afd.eval.table import format_reports
from afd.video.core import STUDENT, Video

# (eval-split prompt, hand-written paraphrase). Eight physics prompts covering every physics
# motion, eight general ones covering every general motion and both objects.
PARAPHRASES: tuple[tuple[str, str], ...] = (
    ("a large cyan ball falls on a black background", "on a black backdrop, a big cyan sphere drops"),
    ("a large orange ball falls on a gray background", "a big orange sphere drops down in front of a grey backdrop"),
    ("a large white ball is thrown to the left on a gray background",
     "someone hurls a big white ball leftward against a gray backdrop"),
    ("a small orange ball is thrown to the right on a navy background",
     "a tiny orange ball gets flung toward the right, navy backdrop"),
    ("a small magenta ball is tossed upward on a gray background",
     "a little magenta ball is thrown straight up against a grey background"),
    ("a small yellow ball is tossed upward on a black background", "tiny yellow ball flung upwards, black background"),
    ("a large green ball rolls to the right on a navy background",
     "a big green ball rolling rightward along the floor of a navy scene"),
    ("a small white ball rolls to the left on a dark green background",
     "a little white ball rolls leftward across a dark green backdrop"),
    ("a large blue ball slides to the left on a navy background",
     "a big blue sphere glides leftward over a navy backdrop"),
    ("a small red square slides to the right on a dark green background",
     "a tiny red box glides to the right against dark green"),
    ("a large cyan square drifts upward on a dark green background",
     "a big cyan block floats slowly upward on a dark green backdrop"),
    ("a large magenta square drifts downward on a black background",
     "a large magenta square sinks gently downward, black backdrop"),
    ("a small white ball drifts upward on a navy background",
     "a little white ball floats up in front of a navy background"),
    ("a large yellow ball stays still on a gray background", "a big yellow ball sits motionless on a grey background"),
    ("a small cyan square stays still on a gray background", "a tiny cyan box that does not move, gray backdrop"),
    ("a small green square slides to the right on a black background",
     "on black, a small green square moves steadily to the right"),
)

# The rows a reworded prompt can break: the headline measures plus what the text specifies.
ROWS = HEADLINE + [("general", key, key.replace("_", " "), 1) for key in
                   ("color_accuracy", "size_accuracy", "background_accuracy", "direction_accuracy")]


def probe(model, per_prompt: int, seed: int, pairs=PARAPHRASES) -> dict:
    """Sample every (original, paraphrase) pair with seeds ``seed .. seed + per_prompt - 1`` and
    score both sets against the originals, ``len(pairs) * per_prompt`` clips each.

    Returns ``{"original": report, "paraphrase": report, "pairs": [...]}``: the two reports in the
    ``afd eval`` JSON schema (both groups, bootstrap ``stderr``), and per pair its two texts and
    each arm's score in 0-100: mean physical consistency for a physics prompt, for a general
    prompt the % of clips whose colour, size, background and direction are all right
    (``score_original``, ``score_paraphrase``)."""
    from afd.rollout_groups import per_rollout
    from afd.student.sample import generate

    if per_prompt < 1:
        raise ValueError(f"per_prompt must be >= 1, got {per_prompt}")
    originals = per_rollout([o for o, _ in pairs], per_prompt)
    seeds = [seed + k for _ in pairs for k in range(per_prompt)]
    out: dict = {"pairs": [{"original": o, "paraphrase": p} for o, p in pairs]}
    for arm, texts in (("original", originals), ("paraphrase", per_rollout([p for _, p in pairs], per_prompt))):
        clips = [Video(v, STUDENT.fps) for v in generate(model, texts, seeds)]
        out[arm], scores = evaluate(clips, originals)
        for i, row in enumerate(out["pairs"]):
            row[f"score_{arm}"] = 100 * sum(map(_clip_score, scores[i * per_prompt:(i + 1) * per_prompt])) / per_prompt
    return out


def _clip_score(s) -> float:
    """One clip's reading of its prompt, in [0, 1] (see ``probe``)."""
    if s.domain == "physics":
        return s.physical_consistency / 100
    return float(s.color_correct and s.size_correct and s.background_correct and s.direction_correct)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m afd.eval.paraphrase", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    ap.add_argument("--checkpoint", default="base-state", help="a shipped student name or a checkpoint directory")
    ap.add_argument("--per-prompt", type=int, default=16, help="seeds per prompt (clips per arm: 16 x this)")
    ap.add_argument("--seed", type=int, default=3000, help="first seed; the same seeds for both arms")
    ap.add_argument("--json", type=Path, default=None, help="write both reports here")
    args = ap.parse_args(argv)
    try:
        from afd.student.base import load_student_model

        model = load_student_model(args.checkpoint)
        reports = probe(model, args.per_prompt, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_reports({arm: reports[arm] for arm in ("original", "paraphrase")}))
    print("per pair (physics: mean physical consistency; general: % of clips with colour, size, background "
          "and direction right), original -> paraphrase:")
    for row in reports["pairs"]:
        print(f"  {row['original']:<66} {row['score_original']:>5.1f} -> {row['score_paraphrase']:5.1f}  "
              f"{row['paraphrase']}")
    print("\n".join(change_lines(reports["original"], reports["paraphrase"], ROWS, ("original", "paraphrase"))))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"checkpoint": args.checkpoint, "per_prompt": args.per_prompt,
                                         "seed": args.seed, **reports}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
