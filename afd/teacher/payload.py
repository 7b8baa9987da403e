"""Clips as bytes on the wire: encode for the server, decode and validate for the client.

Encoding and decoding go through ``afd.video.io`` (a temporary file per clip), so the wire
format is exactly what ``write_video``/``read_video`` produce and check. The client accepts
mp4, gif and npz (recognised by their leading bytes, whatever the Content-Type claims); npz is
read with ``allow_pickle=False`` like every npz in afd.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from afd.video.core import Video
from afd.video.io import VideoFileError, read_video, write_video

# The afd server describes each clip in these response headers; the client checks them when
# present (a third-party API will not send them, and then only the decoded clip is checked).
H_FRAMES, H_HEIGHT, H_WIDTH, H_FPS = "X-AFD-Frames", "X-AFD-Height", "X-AFD-Width", "X-AFD-FPS"
H_SHA256, H_TEACHER, H_JOB = "X-AFD-SHA256", "X-AFD-Teacher", "X-AFD-Job"


class PayloadError(ValueError):
    """Bytes that are not an acceptable clip: empty, truncated, another format, or not what the
    headers announced. Transient from the client's point of view: it fetches the clip again."""


@dataclass(frozen=True)
class ClipLimits:
    """What a received clip must look like before it counts as received."""

    max_bytes: int = 512 * 2**20
    min_frames: int = 1
    max_frames: int = 10_000
    max_side: int = 8192


@dataclass(frozen=True)
class EncodedClip:
    """A clip as the server sends it: the file bytes and the headers that describe them."""

    data: bytes
    media_type: str
    headers: dict[str, str]


def encode_clip(video: Video, suffix: str = ".mp4") -> EncodedClip:
    """Encode ``video`` as file bytes (via ``write_video``) with the X-AFD-* headers."""
    with tempfile.TemporaryDirectory(prefix="afd-wire-") as d:
        path = write_video(Path(d) / f"clip{suffix}", video)
        data = path.read_bytes()
    T, _, H, W = video.frames.shape
    media = {".mp4": "video/mp4", ".gif": "image/gif", ".npz": "application/x-npz"}[suffix]
    return EncodedClip(data, media, {
        H_FRAMES: str(T), H_HEIGHT: str(H), H_WIDTH: str(W), H_FPS: repr(float(video.fps)),
        H_SHA256: hashlib.sha256(data).hexdigest(),
    })


def sniff_suffix(data: bytes) -> str | None:
    """The file type from its leading bytes: '.mp4', '.gif', '.npz' or None."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return ".mp4"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:4] == b"PK\x03\x04":
        return ".npz"
    return None


def _header_int(headers, name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise PayloadError(f"header {name} is not an integer: {raw[:40]!r}") from None


def decode_clip(data: bytes, headers=None, limits: ClipLimits = ClipLimits()) -> Video:
    """Decode and validate received clip bytes; raises PayloadError saying what is wrong.

    Checks: non-empty, within ``limits.max_bytes``, a known video container, decodes fully,
    frame count and size within limits, and agreement with any X-AFD-* headers (digest, frames,
    size, fps), which is how a body cut short but still decodable is caught.
    """
    headers = headers or {}
    if not data:
        raise PayloadError("empty body (0 bytes)")
    if len(data) > limits.max_bytes:
        raise PayloadError(f"body is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    digest = headers.get(H_SHA256)
    if digest is not None and hashlib.sha256(data).hexdigest() != digest.strip().lower():
        raise PayloadError(f"body ({len(data)} bytes) does not match its {H_SHA256} digest (truncated or altered)")
    suffix = sniff_suffix(data)
    if suffix is None:
        head = data[:24].decode("latin-1").encode("unicode_escape").decode()
        raise PayloadError(f"body ({len(data)} bytes) is not an mp4, gif or npz clip; it starts with {head!r}")
    fd, tmp = tempfile.mkstemp(prefix="afd-recv-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        video = read_video(tmp)
    except VideoFileError as e:
        # The temporary path means nothing to the user; keep only the decoder's reason.
        raise PayloadError(f"{suffix[1:]} body ({len(data)} bytes) does not decode: "
                           f"{str(e).removeprefix(tmp + ': ')}") from None
    finally:
        os.unlink(tmp)
    T, _, H, W = video.frames.shape
    if not limits.min_frames <= T <= limits.max_frames:
        raise PayloadError(f"clip has {T} frames; expected {limits.min_frames}..{limits.max_frames}")
    if max(H, W) > limits.max_side:
        raise PayloadError(f"clip is {H}x{W}; the largest side allowed is {limits.max_side}")
    for name, got in ((H_FRAMES, T), (H_HEIGHT, H), (H_WIDTH, W)):
        want = _header_int(headers, name)
        if want is not None and want != got:
            raise PayloadError(f"decoded clip has {name.split('-')[-1].lower()}={got} but {name} says {want}")
    fps_raw = headers.get(H_FPS)
    if fps_raw is not None:
        try:
            fps = float(fps_raw)
        except ValueError:
            raise PayloadError(f"header {H_FPS} is not a number: {fps_raw[:40]!r}") from None
        if not (math.isfinite(fps) and fps > 0):
            raise PayloadError(f"header {H_FPS} must be a positive number, got {fps_raw[:40]!r}")
        # Containers round the rate (mp4 timebases); the header carries the exact value.
        if abs(fps - video.fps) > 0.01 * fps:
            raise PayloadError(f"decoded clip runs at {video.fps:g} fps but {H_FPS} says {fps:g}")
        video = Video(video.frames, fps)
    return video
