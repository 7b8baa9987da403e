import os
import stat

import numpy as np
import pytest
import torch

from afd.video import STUDENT, Video, VideoFormat, resample, stack
from afd.video.io import VideoFileError, read_video, write_video
from afd.video.strip import save_strip
from afd.world.sample import sample_world


@pytest.fixture(scope="module")
def clip():
    return sample_world(["a large blue ball is thrown to the right on a gray background"], [2])[0].video


def test_video_validates_shape_dtype_fps():
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        Video(torch.zeros(4, 1, 8, 8), 8)
    with pytest.raises(ValueError, match="zero frames"):
        Video(torch.zeros(0, 3, 8, 8), 8)
    with pytest.raises(TypeError, match="floating point"):
        Video(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 8)
    with pytest.raises(ValueError, match="fps"):
        Video(torch.zeros(2, 3, 8, 8), 0)


def test_uint8_round_trip(clip):
    back = Video.from_uint8(clip.to_uint8(), clip.fps)
    assert (back.frames - clip.frames).abs().max() <= 1 / 127.5 + 1e-6


def test_resample_identity_and_exact_time_downsample(clip):
    assert torch.equal(resample(clip, clip.format).frames, clip.frames)
    half = resample(clip, VideoFormat(16, 64, 64, 8.0))
    assert torch.equal(half.frames, clip.frames[::2])  # timestamps coincide: no blending


def test_resample_area_is_block_mean_for_integer_factor(clip):
    small = resample(clip, VideoFormat(32, 32, 32, 16.0))
    expect = torch.nn.functional.avg_pool2d(clip.frames, 2)
    assert torch.allclose(small.frames, expect, atol=1e-6)


def test_resample_area_non_integer_preserves_mean(clip):
    out = resample(clip, VideoFormat(32, 24, 24, 16.0))
    assert out.frames.shape == (32, 3, 24, 24)
    assert torch.allclose(out.frames.mean((2, 3)), clip.frames.mean((2, 3)), atol=1e-5)


def test_resample_time_blends_between_frames():
    frames = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 3, 2, 2).contiguous()
    v = Video(frames, 4.0)  # t = 0, .25, .5, .75, 1
    out = resample(v, VideoFormat(3, 2, 2, 3.0))  # t = 0, 1/3, 2/3
    expect = torch.tensor([-1.0, -1 + 2 * (1 / 3), -1 + 4 * (1 / 3)])
    assert torch.allclose(out.frames[:, 0, 0, 0], expect, atol=1e-6)


def test_resample_centre_crops_aspect():
    f = torch.full((2, 3, 4, 8), -1.0)
    f[..., :, 2:6] = 1.0  # the centre square is white, the sides black
    out = resample(Video(f, 8), VideoFormat(2, 2, 2, 8))
    assert torch.allclose(out.frames, torch.ones(2, 3, 2, 2))


def test_resample_too_short_names_durations(clip):
    with pytest.raises(ValueError, match="clip too short: it lasts 1.938 s"):
        resample(clip, VideoFormat(40, 32, 32, 16.0))


def test_student_format_default(clip):
    s = resample(clip, STUDENT)
    assert s.frames.shape == (16, 3, 32, 32) and s.fps == 8.0


def test_stack_requires_one_format(clip):
    assert stack([clip, clip]).shape == (2, 32, 3, 64, 64)
    with pytest.raises(ValueError, match="resample first"):
        stack([clip, resample(clip, STUDENT)])


def test_npz_round_trip_is_exact_with_record(tmp_path, clip):
    p = write_video(tmp_path / "c.npz", clip, record={"k": [1, 2]})
    v, rec = read_video(p, with_record=True)
    assert np.array_equal(v.to_uint8(), clip.to_uint8()) and v.fps == clip.fps and rec == {"k": [1, 2]}


def test_gif_round_trip_keeps_frames_and_fps(tmp_path):
    # A ball resting on the floor: identical consecutive frames, which GIF writers merge.
    still = sample_world(["a small red ball rolls to the left on a black background"], [0])[0].video
    still = Video(torch.cat([still.frames, still.frames[-1:].expand(8, -1, -1, -1)]), 16.0)
    v = read_video(write_video(tmp_path / "c.gif", still))
    assert v.frames.shape == still.frames.shape and v.fps == 16.0
    assert (v.frames - still.frames).abs().mean() < 0.02


def test_mp4_round_trip_is_close(tmp_path, clip):
    v = read_video(write_video(tmp_path / "c.mp4", clip))
    assert v.frames.shape == clip.frames.shape and abs(v.fps - clip.fps) < 1e-6
    mse = ((v.frames - clip.frames) ** 2).mean().item()
    psnr = 10 * np.log10(4 / mse)  # peak-to-peak range of [-1, 1] is 2
    assert psnr > 30, psnr


def test_mp4_odd_size_is_padded(tmp_path):
    v = Video(torch.zeros(4, 3, 9, 11), 8.0)
    back = read_video(write_video(tmp_path / "odd.mp4", v))
    assert back.frames.shape[0] == 4


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".npz"])
def test_bad_files_name_file_and_problem(tmp_path, clip, ext):
    good = write_video(tmp_path / f"good{ext}", clip).read_bytes()
    cases = {
        "empty": (b"", "empty"),
        "junk": (b"this is not a video at all" * 10, "not a readable"),
        "trunc": (good[: len(good) // 3], "not a readable" if ext != ".mp4" else ""),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / f"{name}{ext}"
        p.write_bytes(data)
        with pytest.raises(VideoFileError) as e:
            read_video(p)
        assert str(p) in str(e.value) and msg in str(e.value), str(e.value)
        assert len(str(e.value).splitlines()) == 1


def test_zero_frames_missing_file_and_bad_extension(tmp_path):
    p = tmp_path / "zero.npz"
    np.savez(p, frames=np.zeros((0, 8, 8, 3), np.uint8), fps=np.array(8.0))
    with pytest.raises(VideoFileError, match="zero frames"):
        read_video(p)
    with pytest.raises(VideoFileError, match="file not found"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoFileError, match="unsupported extension '.avi'"):
        read_video(tmp_path / "x.avi")
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(VideoFileError, match="must hold 'frames' and 'fps'"):
        read_video(tmp_path / "wrong.npz")


def test_write_is_atomic_on_failure(tmp_path, clip, monkeypatch):
    import os

    target = tmp_path / "c.npz"
    write_video(target, clip)
    before = target.read_bytes()

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_video(target, Video(torch.zeros(2, 3, 4, 4), 8.0))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path, clip, umask):
    """Atomic writes create their temporary file as ``open`` would (0666 less the umask), not
    mkstemp's 0600, so clips, manifests and checkpoints are readable by whom the user expects."""
    from afd.io_utils import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "manifest.jsonl", "{}\n")
        write_video(tmp_path / "clip.npz", clip)
        write_video(tmp_path / "clip.npz", clip)  # replacing a file: the new one's mode, same rule
    finally:
        os.umask(old)
    for name in ("manifest.jsonl", "clip.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.npz", "manifest.jsonl"]  # no temporary left


def test_strip_png(tmp_path, clip):
    from PIL import Image

    p = save_strip(tmp_path / "s.png", [clip, resample(clip, STUDENT)], ["teacher", "student"], n_frames=6, cell=48)
    im = Image.open(p)
    assert im.width == 6 * (48 + 2)
    assert im.height > 2 * 48
    with pytest.raises(ValueError, match="captions"):
        save_strip(tmp_path / "t.png", [clip], ["a", "b"])
