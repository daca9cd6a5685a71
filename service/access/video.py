"""Video instances and videos of multi-frame images, for ``…/rendered`` and thumbnails.

A video instance (an MPEG-2, H.264 or HEVC transfer syntax) keeps its stream in its Pixel
Data fragments: ``locate`` finds them in the blob without reading them, so that the stream is
sent as stored, with byte ranges, from the blob. What needs ffmpeg (a frame of the video, the
stream remuxed into MP4, an MP4 of a multi-frame image's rendered frames) works on a local
copy within DICOMWEB_TRANSCODE_MAX_BYTES, in a conversion slot, into a spool file that the
answer then reads (with ranges too)."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from storage import Archive, StoredInstance
from storage.dataset import read_until_pixels
from transcode import video
from transcode.streams import boxes
from transcode.syntaxes import TRANSFER_SYNTAXES

from ..errors import NotAcceptable, NotFound, ServiceUnavailable
from ..limits import TranscodeLimits

COPY_CHUNK = 1 << 20
VIDEO_SYNTAXES = frozenset(uid for uid, ts in TRANSFER_SYNTAXES.items() if ts.bulk_media_type.startswith("video/"))


def is_video(stored: StoredInstance) -> bool:
    return stored.transfer_syntax_uid in VIDEO_SYNTAXES


@dataclass(frozen=True)
class StoredVideo:
    spans: tuple[tuple[int, int], ...]   # the stream: these (offset, length) of the blob, in order
    container: str                       # transcode.video.container
    frame_ms: float

    @property
    def size(self) -> int:
        return sum(length for _, length in self.spans)

    @property
    def media_type(self) -> str:
        return video.CONTAINER_MEDIA_TYPES.get(self.container, "application/octet-stream")


def locate(archive: Archive, stored: StoredInstance) -> StoredVideo:
    with archive.ranged(stored) as fp:   # the headers only: the stream is not read
        ds, location = read_until_pixels(fp)
    spans = tuple((offset, length) for offset, length in (location.fragments if location else ()) if length)
    if not spans:
        raise NotFound("the video instance holds no video stream")
    head = archive.read(stored, spans[0][0], min(spans[0][1], 192))
    kind = video.container(head)
    last_offset, last_length = spans[-1]
    if last_length % 2 == 0 and archive.read(stored, last_offset + last_length - 1, 1) == b"\0" \
            and _padded(archive, stored, kind, spans):
        spans = spans[:-1] + ((last_offset, last_length - 1),)   # the pad byte of an odd-length stream (PS3.5 A.4)
    return StoredVideo(spans, kind, video.frame_time_ms(lambda keyword: ds.get(keyword)))


def _padded(archive: Archive, stored: StoredInstance, kind: str, spans) -> bool:
    """Whether the stream's last byte, a zero, is the fragment's padding rather than the stream's:
    where the container tells its own length (MP4 boxes, 188-byte TS packets, a program stream's
    end code)."""
    size = sum(length for _, length in spans)
    if kind == "mpegts":
        return size % 188 == 1
    if kind == "mpegps":
        offset, length = spans[-1]
        return archive.read(stored, offset + length - 5, 5) == b"\x00\x00\x01\xb9\x00"
    if kind == "mp4" and len(spans) == 1:
        return _boxes_end(archive, stored, spans[0]) == size - 1
    return False


def _mp4_boxes(archive: Archive, stored: StoredInstance, span: tuple[int, int]):
    """The top-level boxes of an MP4 stream in the blob (transcode.streams.boxes), read by their headers."""
    offset, length = span
    return boxes(lambda position, count: archive.read(stored, offset + position, count), 0, length)


def _boxes_end(archive: Archive, stored: StoredInstance, span: tuple[int, int]) -> int | None:
    """Where an MP4's last top-level box ends, None if one is damaged or they do not fit."""
    end = 0
    for _, start, end in _mp4_boxes(archive, stored, span):
        if end < start:   # a size below its own header
            return None
    return end if end <= span[1] else None


@contextmanager
def local_copy(archive: Archive, stored: StoredInstance, found: StoredVideo, limits: TranscodeLimits,
               whole: bool) -> Iterator[str]:
    """The stream as ffmpeg's input: where the blob is a local file and the stream one fragment,
    that span of the file itself (ffmpeg's subfile protocol: nothing copied); else a copy in a
    temporary file. A frame of a transport or program stream, or of an MP4 with its index
    first, needs only the stream's start (the budget's worth); a remux, or an MP4 indexed at
    its end, needs all of it, within the budget (413 beyond)."""
    path = archive.local_path(stored)
    if path is not None and len(found.spans) == 1 and "," not in path and ":" not in path:
        offset, length = found.spans[0]
        yield f"subfile,,start,{offset},end,{offset + length},,:{path}"
        return
    needs_all = whole or (found.container == "mp4" and not _index_first(archive, stored, found))
    if needs_all:
        limits.check(found.size, "video conversion")
    budget = found.size if needs_all else min(found.size, limits.max_bytes)
    with tempfile.NamedTemporaryFile(dir=limits.spool_dir, suffix=".video") as copy:
        for offset, length in found.spans:
            take = min(length, budget)
            for start in range(offset, offset + take, COPY_CHUNK):
                copy.write(archive.read(stored, start, min(COPY_CHUNK, offset + take - start)))
            budget -= take
            if budget <= 0:
                break
        copy.flush()
        yield copy.name


def _index_first(archive: Archive, stored: StoredInstance, found: StoredVideo) -> bool:
    """Whether an MP4's moov box comes before its mdat."""
    for kind, _, _ in _mp4_boxes(archive, stored, found.spans[0]):
        if kind in (b"moov", b"mdat"):
            return kind == b"moov"
    return False


def video_frame(archive: Archive, stored: StoredInstance, number: int, largest: int,
                limits: TranscodeLimits, before_answer: bool = True) -> Image.Image:
    """Frame ``number`` of a video instance, as an RGB image of at most ``largest`` pixels a side."""
    found = locate(archive, stored)
    with limits.slot(before_answer), local_copy(archive, stored, found, limits, whole=False) as path:
        return _ffmpeg(lambda: video.frame(path, number, found.frame_ms, largest, found.container))


def remuxed_mp4(archive: Archive, stored: StoredInstance, limits: TranscodeLimits):
    """The video stream of an instance stored in another container, as an MP4 in a spool file."""
    found = locate(archive, stored)
    out = tempfile.NamedTemporaryFile(dir=limits.spool_dir, suffix=".mp4")
    try:
        with limits.slot(True), local_copy(archive, stored, found, limits, whole=True) as path:
            _ffmpeg(lambda: video.remux_mp4(path, Path(out.name)))
        out.seek(0, 2)
        return out
    except BaseException:
        out.close()
        raise


def frames_video(images, frame_ms: float, media_type: str, limits: TranscodeLimits):
    """Rendered frames as a video (transcode.video.encode_video) in a spool file, the frames made
    as ffmpeg takes them."""
    out = tempfile.NamedTemporaryFile(dir=limits.spool_dir, suffix=".video")
    try:
        with limits.slot(True):
            _ffmpeg(lambda: video.encode_video(images, frame_ms, Path(out.name), media_type))
        out.seek(0, 2)
        return out
    except BaseException:
        out.close()
        raise


def _ffmpeg(work):
    try:
        return work()
    except video.VideoBusy as exc:
        raise ServiceUnavailable(f"the video could not be converted in time: {exc}", {"Retry-After": "30"}) from None
    except video.VideoError as exc:
        raise NotAcceptable(f"the video cannot be converted: {exc}") from None
