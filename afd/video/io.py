"""Read and write clips as mp4 (ffmpeg from the imageio-ffmpeg wheel), gif and npz.

npz is the lossless format (uint8 frames + fps, optionally a JSON record); mp4 and gif are for
viewing and for exchanging with tools that expect them. Every read validates the file and raises
VideoFileError naming the file and the problem, never a decoder traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from afd.io_utils import atomic_write_bytes  # noqa: F401  (re-exported: older imports use afd.video.io)

if TYPE_CHECKING:  # imported where clips are built: FORMATS and the writers stay torch-free to import
    from afd.video.core import Video

FORMATS = (".mp4", ".gif", ".npz")
_GIF_FPS_TAG = "afd-fps="


class VideoFileError(ValueError):
    """A video file that cannot be read or written; the message names the file."""


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in FORMATS:
        raise VideoFileError(f"{path}: unsupported extension {s or '(none)'!r}; use one of {', '.join(FORMATS)}")
    return s


def _encode(video: Video, suffix: str, record: dict | None) -> bytes:
    frames = video.to_uint8()
    if suffix == ".npz":
        import io

        buf = io.BytesIO()
        extra = {"record": np.array(json.dumps(record))} if record is not None else {}
        np.savez_compressed(buf, frames=frames, fps=np.array(video.fps), **extra)
        return buf.getvalue()
    import imageio.v3 as iio

    if suffix == ".gif":
        # GIF stores frame durations in 1/100 s; imageio takes milliseconds.
        # GIF stores delays in 1/100 s, so the exact fps also goes into a comment block.
        return iio.imwrite(
            "<bytes>", frames, extension=".gif", duration=1000.0 / video.fps, loop=0,
            comment=f"{_GIF_FPS_TAG}{video.fps!r}".encode(),
        )
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:  # yuv420p needs even sides: pad by edge replication
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, "clip.mp4")
        w = imageio_ffmpeg.write_frames(
            tmp, (frames.shape[2], frames.shape[1]), fps=video.fps, codec="libx264",
            pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
            output_params=["-crf", "12", "-preset", "veryfast"], ffmpeg_log_level="error",
        )
        w.send(None)
        for fr in frames:
            w.send(np.ascontiguousarray(fr))
        w.close()
        return Path(tmp).read_bytes()


def write_video(path: str | os.PathLike, video: Video, record: dict | None = None) -> Path:
    """Write a clip; the format follows the extension (.mp4, .gif, .npz). Atomic.

    ``record`` (JSON-serialisable) is stored only in npz files.
    """
    path = Path(path)
    atomic_write_bytes(path, _encode(video, _suffix(path), record))
    return path


def _read_npz(path: Path) -> tuple[Video, dict | None]:
    from afd.video.core import Video

    try:
        with np.load(path, allow_pickle=False) as z:
            if "frames" not in z.files or "fps" not in z.files:
                raise VideoFileError(f"{path}: npz clip must hold 'frames' and 'fps', found {z.files}")
            frames, fps = z["frames"], float(z["fps"])
            record = json.loads(str(z["record"])) if "record" in z.files else None
    except VideoFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise VideoFileError(f"{path}: not a readable npz clip (truncated, corrupt or another format): "
                             f"{first_line}") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoFileError(f"{path}: 'frames' must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise VideoFileError(f"{path}: clip has zero frames")
    if not fps > 0:
        raise VideoFileError(f"{path}: fps must be > 0, got {fps}")
    return Video.from_uint8(frames, fps), record


def _decode_gif(path: Path) -> tuple[np.ndarray, float]:
    """GIF writers merge identical consecutive frames into one longer frame, so frames are
    expanded back by their display durations (what a player shows) at the stored fps."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        comment = im.info.get("comment", b"")
        comment = comment.decode(errors="replace") if isinstance(comment, bytes) else str(comment)
        frames, durations = [], []
        for fr in ImageSequence.Iterator(im):
            frames.append(np.asarray(fr.convert("RGB")))
            durations.append(float(fr.info.get("duration") or 100))
    if comment.startswith(_GIF_FPS_TAG):
        fps = float(comment[len(_GIF_FPS_TAG):])
    else:
        fps = 1000.0 / min(durations)
    repeats = [max(1, round(d * fps / 1000.0)) for d in durations]
    return np.repeat(np.stack(frames), repeats, axis=0), fps


def _read_ffmpeg(path: Path, suffix: str) -> Video:
    from afd.video.core import Video

    try:
        if suffix == ".gif":
            frames, fps = _decode_gif(path)
        else:
            import imageio_ffmpeg

            reader = imageio_ffmpeg.read_frames(str(path))
            meta = reader.__next__()
            w, h = meta["size"]
            fps = float(meta["fps"])
            frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]
            if not frames:
                raise VideoFileError(f"{path}: clip has zero frames (empty or truncated video stream)")
            frames = np.stack(frames)
    except VideoFileError:
        raise
    except StopIteration:
        raise VideoFileError(f"{path}: no video stream found") from None
    except Exception as e:  # decoders raise many types (OSError, RuntimeError, ...)
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise VideoFileError(
            f"{path}: not a readable {suffix[1:]} video (truncated, corrupt or another format): {first_line}"
        ) from None
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single-frame gif
        frames = frames[None]
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoFileError(f"{path}: clip has zero frames")
    if not fps > 0:
        raise VideoFileError(f"{path}: invalid frame rate {fps}")
    return Video.from_uint8(frames.astype(np.uint8), fps)


def read_video(path: str | os.PathLike, with_record: bool = False):
    """Read a clip (.mp4, .gif, .npz). Returns a Video, or (Video, record|None) if asked.

    Raises VideoFileError for a missing, empty, truncated or non-video file, or zero frames.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise VideoFileError(f"{path}: file not found")
    if path.is_dir():
        raise VideoFileError(f"{path}: is a directory, not a clip")
    if path.stat().st_size == 0:
        raise VideoFileError(f"{path}: file is empty (0 bytes)")
    if suffix == ".npz":
        video, record = _read_npz(path)
    else:
        video, record = _read_ffmpeg(path, suffix), None
    return (video, record) if with_record else video
