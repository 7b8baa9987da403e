import json
import os

import pytest
import torch

from afd.teacher import (
    CachedTeacher,
    FolderTeacher,
    ManifestError,
    Teacher,
    TeacherBudgetExceeded,
    TeacherError,
    make_teacher,
    to_student_format,
)
from afd.video import STUDENT, Video
from afd.video.io import write_video
from afd.world.teacher import WorldTeacher

P = ["a small red ball falls on a gray background", "a large green ball rolls to the right on a black background",
     "a small white square drifts upward on a navy background"]


class CountingTeacher(Teacher):
    """Wraps the world and counts what it is asked for; can fail after N clips."""

    def __init__(self, fail_after=None):
        self.inner, self.calls, self.fail_after = WorldTeacher(), [], fail_after

    @property
    def id(self):
        return "counting-" + self.inner.id

    def sample(self, prompts, seeds):
        return [v for _, v in sorted(self.sample_iter(prompts, seeds), key=lambda x: x[0])]

    def sample_iter(self, prompts, seeds):
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise TeacherError("connection lost")
            self.calls.append((p, s))
            yield i, self.inner.sample([p], [s])[0]


def test_world_teacher_is_black_box_native_format():
    t = WorldTeacher()
    vids = t.sample(P, [0, 1, 2])
    assert [v.frames.shape for v in vids] == [(32, 3, 64, 64)] * 3
    assert all(type(v) is Video for v in vids)  # the simulation record does not leak
    assert t.id == "world-v1-real-64x64x32@16fps" and WorldTeacher("loose").id != t.id


def test_request_validation():
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        WorldTeacher().sample(P[:2], [0])
    with pytest.raises(ValueError, match="seed 0 .* must be an int >= 0"):
        WorldTeacher().sample(P[:1], [-3])


def test_adapter_to_student_format():
    out = to_student_format(WorldTeacher().sample(P[:1], [0]))
    assert out[0].format == STUDENT


def test_cache_hits_misses_and_duplicates(tmp_path):
    inner = CountingTeacher()
    t = CachedTeacher(inner, tmp_path)
    a = t.sample([P[0], P[0], P[1]], [0, 0, 0])
    assert len(inner.calls) == 2 and (t.stats.paid, t.stats.hits) == (2, 1)
    b = t.sample([P[1], P[0]], [0, 0])
    assert len(inner.calls) == 2 and (t.stats.paid, t.stats.hits) == (2, 3)
    assert torch.equal(a[2].frames, b[0].frames)
    # Cached clips are lossless copies of what was paid for.
    direct = WorldTeacher().sample([P[0]], [0])[0]
    assert (a[0].frames - direct.frames).abs().max() <= 1 / 127.5 + 1e-6
    # A new process over the same directory sees the paid clips.
    t2 = CachedTeacher(CountingTeacher(), tmp_path)
    assert t2.stats.paid_total == 2
    t2.sample([P[0]], [0])
    assert (t2.stats.paid, t2.stats.hits) == (0, 1)
    assert len((t.dir / "index.jsonl").read_text().splitlines()) == 2


def test_cache_keys_separate_teachers(tmp_path):
    CachedTeacher(WorldTeacher("real"), tmp_path).sample([P[0]], [0])
    loose = CachedTeacher(WorldTeacher("loose"), tmp_path)
    assert loose.stats.paid_total == 0 and not loose.contains(P[0], 0)


def test_budget_error_before_paying(tmp_path):
    inner = CountingTeacher()
    t = CachedTeacher(inner, tmp_path, budget=3)
    t.sample(P[:2], [0, 0])
    with pytest.raises(TeacherBudgetExceeded) as e:
        t.sample(P, [1, 1, 1])  # needs 3 more, only 1 left
    msg = str(e.value)
    assert "needs 3 new clips" in msg and "budget is 3" in msg and "2 are already paid" in msg
    assert len(inner.calls) == 2  # nothing was paid for the refused request
    t.sample(P[:2] + [P[2]], [0, 0, 5])  # cached ones are free; one new fits
    assert t.stats.paid_total == 3
    with pytest.raises(TeacherBudgetExceeded):
        CachedTeacher(CountingTeacher(), tmp_path, budget=3).sample([P[0]], [9])


def test_interrupted_batch_keeps_paid_clips(tmp_path):
    inner = CountingTeacher(fail_after=2)
    t = CachedTeacher(inner, tmp_path, chunk_size=16)
    with pytest.raises(TeacherError, match="connection lost"):
        t.sample(P, [0, 0, 0])
    assert t.stats.paid_total == 2 and t.contains(P[0], 0) and t.contains(P[1], 0)
    inner.fail_after = None
    t.sample(P, [0, 0, 0])
    assert inner.calls == [(P[0], 0), (P[1], 0), (P[2], 0)]  # each paid exactly once


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    t = CachedTeacher(CountingTeacher(), tmp_path)
    real_replace = os.replace

    def crash(*a):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        t.sample([P[0]], [0])
    monkeypatch.setattr(os, "replace", real_replace)
    assert not t.contains(P[0], 0)
    assert not [p for p in t.dir.rglob("*") if p.is_file() and p.name != "index.jsonl"]
    assert CachedTeacher(CountingTeacher(), tmp_path).stats.paid_total == 0


def _folder(tmp_path, entries):
    lines = []
    for p, s in entries:
        rel = f"c_{len(lines)}.npz"
        write_video(tmp_path / rel, WorldTeacher().sample([p], [s])[0])
        lines.append(json.dumps({"prompt": p, "seed": s, "path": rel}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_folder_teacher_exact_and_any_seed(tmp_path):
    d = _folder(tmp_path, [(P[0], 10), (P[0], 11), (P[1], 3)])
    t = FolderTeacher(d)
    v = t.sample([P[0]], [11])[0]
    assert torch.equal(v.frames, FolderTeacher(d).sample([P[0]], [11])[0].frames)
    with pytest.raises(TeacherError, match=r"seed 0; available seeds: \[10, 11\]"):
        t.sample([P[0]], [0])
    with pytest.raises(TeacherError, match="no clip for prompt"):
        t.sample([P[2]], [0])
    anyseed = make_teacher(f"folder:{d}:any-seed")
    assert torch.equal(anyseed.sample([P[0]], [1])[0].frames, v.frames)  # seed 1 -> 2nd clip (seed 11)
    assert anyseed.id != t.id


@pytest.mark.parametrize("line, msg", [
    ("{not json", "manifest.jsonl:1: not valid JSON"),
    ('{"prompt": "x", "seed": 1}', "manifest.jsonl:1: missing field 'path'"),
    ('{"prompt": "x", "seed": "1", "path": "a.npz"}', "field 'seed' must be int, got str"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_manifest_names_line(tmp_path, line, msg):
    (tmp_path / "manifest.jsonl").write_text(line + "\n")
    with pytest.raises(ManifestError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        FolderTeacher(tmp_path)


def test_missing_manifest_and_spec_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        FolderTeacher(tmp_path)
    with pytest.raises(ValueError, match="unknown teacher spec"):
        make_teacher("ftp://x")
    assert isinstance(make_teacher("world:loose"), WorldTeacher)
