"""Video, through Debian's ffmpeg run as a bounded subprocess: what container a stored video
stream is in, one frame of it as an image, the stream remuxed into MP4 for a browser, and
rendered frames of a multi-frame image encoded as an MP4 (or MPEG-2) at the instance's frame rate.

DICOM keeps MPEG-2 as a program or transport stream and H.264/HEVC in MPEG-TS or MP4 (PS3.5
8.2.5–8.2.8), one fragment holding the whole stream. ffmpeg reads a local file (an MP4 may
have its index at the end) and writes one; it runs with a wall-clock limit and few threads,
its output capped, so that a hostile stream costs a bound: on a limit it is killed and the
caller answers 503 or 406, never waits. Its input is a file path or a span of one
(``subfile,,start,S,end,E,,:path``): a peer's bytes never become a URL or an option.
"""
from __future__ import annotations

import io
import itertools
import subprocess
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .codecs import ConversionError

FFMPEG = "ffmpeg"
FFMPEG_SECONDS = 60          # wall clock of one ffmpeg run, frames fed to it included
MAX_VIDEO_FRAMES = 5_000     # frames of one image encoded as a video (a 200-frame cine takes 1.3 s)
FFMPEG_THREADS = "2"
MAX_FRAME_BYTES = 64 << 20   # one frame extracted as PNG
MAX_VIDEO_PIXELS = 8192 * 4320   # a frame decoded (8K video)
MP4_PRESET, MP4_CRF = "superfast", "20"   # H.264 for review, made on request: veryfast took 1.7 times as long

# Container → the media type its bytes are sent as.
CONTAINER_MEDIA_TYPES = {"mp4": "video/mp4", "mpegts": "video/mp2t", "mpegps": "video/mpeg",
                         "h264": "video/h264", "hevc": "video/h265", "mpeg2": "video/mpeg"}


class VideoError(ConversionError):
    """A video ffmpeg could not read or write as asked."""


class VideoBusy(VideoError):
    """ffmpeg ran past its time limit (killed)."""


def container(head: bytes) -> str:
    """The container of a stored video stream, from its first bytes (at least 192 of them)."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:1] == b"\x47" and (len(head) < 189 or head[188:189] == b"\x47"):
        return "mpegts"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpegps"
    if head[:4] == b"\x00\x00\x01\xb3":
        return "mpeg2"          # an MPEG-2 video elementary stream (sequence header)
    if head[:4] == b"\x00\x00\x00\x01" or head[:3] == b"\x00\x00\x01":
        nal = head[4] if head[:4] == b"\x00\x00\x00\x01" else head[3]
        return "hevc" if (nal >> 1) & 0x3F in (32, 33, 34, 35) else "h264"   # VPS/SPS/PPS/AUD of HEVC
    return "unknown"


def frame_time_ms(model_first) -> float:
    """Milliseconds a frame, from Frame Time, Cine Rate or Recommended Display Frame Rate (PS3.3
    C.7.6.5, C.8.5.?), whichever the instance has: ``model_first(keyword)`` gives a value or None.
    100 ms when none is usable."""
    for keyword, to_ms in (("FrameTime", lambda v: v), ("CineRate", lambda v: 1000 / v),
                           ("RecommendedDisplayFrameRate", lambda v: 1000 / v)):
        try:
            value = float(model_first(keyword))
        except (TypeError, ValueError):
            continue
        if value > 0:
            ms = to_ms(value)
            if 1 <= ms <= 10_000:
                return ms
    return 100.0


def _run(args: list[str], max_output: int = MAX_FRAME_BYTES) -> bytes:
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    try:
        run = subprocess.run(command, capture_output=True, timeout=FFMPEG_SECONDS)
    except subprocess.TimeoutExpired:
        raise VideoBusy(f"ffmpeg ran past {FFMPEG_SECONDS} s and was stopped") from None
    except FileNotFoundError:
        raise VideoError("ffmpeg is not installed on this server") from None
    if run.returncode != 0:
        message = run.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VideoError("ffmpeg could not read the video: " + (message[-1][:200] if message else f"exit {run.returncode}"))
    if len(run.stdout) > max_output:
        raise VideoError(f"ffmpeg's output exceeds {max_output} bytes")
    return run.stdout


def frame(source: str, number: int, frame_ms: float, largest: int, kind: str = "mp4") -> Image.Image:
    """Frame ``number`` (1-based) of the video in ``source``, as an RGB image no larger than
    ``largest`` pixels a side: found by its time (number − 1 frame times), decoded by ffmpeg.
    An MP4 is entered at the keyframe before that time; a transport or program stream, whose
    timestamps start anywhere, is decoded from its start (the time limit bounds how far)."""
    seconds = f"{max(0.0, (number - 1) * frame_ms / 1000):.3f}"
    scale = f"scale='min({largest},iw)':'min({largest},ih)':force_original_aspect_ratio=decrease"
    # A stream declaring frames beyond MAX_VIDEO_PIXELS is refused by the decoder before it allocates.
    where = ["-max_pixels", str(MAX_VIDEO_PIXELS)] + \
        (["-ss", seconds, "-i", source] if kind == "mp4" else ["-i", source, "-ss", seconds])
    data = _run(["-threads", FFMPEG_THREADS, *where, "-frames:v", "1",
                 "-vf", scale, "-f", "image2pipe", "-vcodec", "png", "pipe:1"])
    if not data:
        raise VideoError(f"the video has no frame {number}")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def remux_mp4(source: str, out: Path) -> None:
    """The video stream of ``source`` copied, not re-encoded, into an MP4 with its index first
    (faststart), which a browser plays and seeks while it downloads; audio dropped."""
    _run(["-threads", FFMPEG_THREADS, "-i", source, "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart",
          "-f", "mp4", "-y", str(out)])


# MPEG-2 knows a few frame rates only (ISO/IEC 13818-2 table 6-4): a cine is shown at the next
# one up, ffmpeg repeating frames to keep its timing.
MPEG2_RATES = (24, 25, 30, 50, 60)


def encode_video(images: Iterable[Image.Image], frame_ms: float, out: Path, media_type: str = "video/mp4") -> None:
    """Rendered frames encoded at one frame each ``frame_ms``, piped to ffmpeg as they are made:
    ``video/mp4``, H.264 (yuv420p, what every browser plays) in an MP4 with its index first;
    ``video/mpeg``, MPEG-2 video in a program stream. FFMPEG_SECONDS bound the whole, from the
    first frame (VideoBusy beyond); more than MAX_VIDEO_FRAMES frames is a VideoError."""
    deadline = time.monotonic() + FFMPEG_SECONDS
    iterator = iter(images)
    first = next(iterator, None)
    if first is None:
        raise VideoError("there is no frame to encode")
    mode = "L" if first.mode == "L" else "RGB"   # grey frames piped as grey: a third of the bytes
    first = first.convert(mode)
    width, height = first.size
    even = "pad=ceil(iw/2)*2:ceil(ih/2)*2"   # 4:2:0 wants even sides
    rate = 1000 / frame_ms
    if media_type == "video/mpeg":
        shown = next((r for r in MPEG2_RATES if r >= rate - 1e-6), MPEG2_RATES[-1])
        codec = ["-vf", f"{even},fps={shown}", "-c:v", "mpeg2video", "-q:v", "3", "-pix_fmt", "yuv420p", "-f", "vob"]
    else:
        codec = ["-vf", even, "-c:v", "libx264", "-preset", MP4_PRESET, "-crf", MP4_CRF, "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", "-f", "mp4"]
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
               "-pix_fmt", "gray" if mode == "L" else "rgb24",
               "-s", f"{width}x{height}", "-framerate", f"{rate:.6g}", "-i", "pipe:0",
               "-threads", FFMPEG_THREADS, *codec, "-y", str(out)]
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise VideoError("ffmpeg is not installed on this server") from None
    try:
        for count, image in enumerate(itertools.chain([first], iterator), 1):
            if count > MAX_VIDEO_FRAMES:
                raise VideoError(f"a video is made of at most {MAX_VIDEO_FRAMES} frames")
            if time.monotonic() > deadline:
                raise VideoBusy(f"making the video took more than {FFMPEG_SECONDS} s; it was stopped")
            image = image.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height))
            process.stdin.write(np.asarray(image, np.uint8).tobytes())
        process.stdin.close()
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        raise VideoBusy(f"ffmpeg ran past {FFMPEG_SECONDS} s and was stopped") from None
    except BrokenPipeError:
        process.wait(timeout=FFMPEG_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        message = process.stderr.read().decode("utf-8", "replace").strip().splitlines() if process.stderr else []
        raise VideoError("ffmpeg could not encode the frames: " + (message[-1][:200] if message else "failed"))
