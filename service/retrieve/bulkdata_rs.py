"""WADO-RS bulk data: the targets of the BulkDataURIs in metadata (PS3.18 §10.4.1.1.5).

``…/instances/{i}/bulk/{tag}`` and, inside sequences, ``…/bulk/{tag}/{item}/{tag}``.
Native pixel data is read by byte range where it lies in the blob; other values
from the data set read up to Pixel Data. ``multipart/related; type="application/octet-stream"``
by default; single-part ``application/octet-stream`` when asked for first, where an
HTTP ``Range`` (one range) is honoured. Pixel data is negotiated as frames are: native
(decoded if need be) as one value, or compressed, one part a frame (PS3.18 §8.7.3.5).
"""
from __future__ import annotations

import re
from typing import BinaryIO, Iterable, Iterator

from flask import Response, request


from storage import Archive, StoredInstance
from transcode.syntaxes import UNCOMPRESSED

from ..wire import multipart
from ..errors import BadRequest, NotAcceptable, NotFound, RangeNotSatisfiable
from ..wire.media import OCTET_STREAM, octet_stream_acceptable, pixel_representations
from ..access.frames import (
    Choice, FrameReader, StoredPixels, choose, frame_bodies, not_acceptable, stored_pixels, value_in_place,
)
from ..access.deidentify import deidentify
from ..access.header import stored_header
from ..web import (
    accepted, anonymize_seed, archive, held_or_relayed, multipart_response, refuse_unless_deidentifiable, require_uids,
    transcode_limits,
)

_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")   # 18 digits: beyond any value, within int64
PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}


class Value:
    """A value to send: bytes in memory, a span of a blob, or frames made one at a time
    (then sent whole: a Range over them is ignored, as RFC 9110 §14.2 allows)."""

    def __init__(self, data: bytes = b"", archive: Archive | None = None, stored: StoredInstance | None = None,
                 offset: int = 0, size: int | None = None, frames: Iterable[Iterable[bytes]] | None = None,
                 file: BinaryIO | None = None) -> None:
        self.data, self.archive, self.stored, self.offset, self.frames = data, archive, stored, offset, frames
        self.file = file   # a local file (a spool of something made for this request), read by range
        self.size = len(data) if size is None else size

    @property
    def ranges(self) -> bool:
        return self.frames is None

    def chunks(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        length = self.size - start if length is None else length
        if self.frames is not None:
            for frame in self.frames:
                yield from frame
        elif self.file is not None:
            self.file.seek(self.offset + start)
            while length > 0 and (chunk := self.file.read(min(length, 1 << 20))):
                length -= len(chunk)
                yield chunk
        elif self.archive is None:
            yield self.data[start:start + length]
        else:
            yield from self.archive.body(self.stored, self.offset + start, length)

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()


def retrieve_bulkdata(study: str, series: str, instance: str, path: str) -> Response:
    require_uids(study=study, series=series, instance=instance)
    if not _PATH.fullmatch(path):
        raise BadRequest(f"bulk data path {path[:80]!r} is not tag[/item/tag…]")
    media = accepted()
    single = bool(media) and media[0].type == OCTET_STREAM
    seed = anonymize_seed(study, request.args.get("anonymize"))
    found, relayed = held_or_relayed(study, series, instance, anonymized=seed is not None)
    if relayed is not None:
        return relayed
    steps = path.split("/")
    tags, items = [int(t, 16) for t in steps[::2]], [int(i) for i in steps[1::2]]
    known = stored_pixels(archive(), found[0]) if tags[0] in PIXEL_TAGS and len(tags) == 1 else None
    if seed is not None and known is not None:   # the profile leaves pixels as they are, or refuses the image
        refuse_unless_deidentifiable(known.model)
    if len(tags) == 1 and tags[0] == 0x7FE00010:
        value = _pixel_data(found[0], known, pixel_representations(media))
        if isinstance(value, Response):
            return value
    else:
        if not single and not octet_stream_acceptable(media):
            raise NotAcceptable('bulk data is sent as multipart/related; type="application/octet-stream" '
                                "or application/octet-stream")
        value = _native_pixel_data(found[0], known) if known is not None else \
            _value(found[0], tags, items, seed)
    if single:
        return single_part(value)
    return multipart_response([multipart.Part({"Content-Type": OCTET_STREAM}, value)], OCTET_STREAM)


def _pixel_data(stored: StoredInstance, known: StoredPixels, representations) -> "Value | Response":  # noqa: ANN001
    """Pixel Data in the best acceptable representation: a native value (sent like any bulk
    data), or an answer of compressed frames, one part each."""
    pixels = known.pixels
    if pixels is None:
        raise NotFound("the instance has no pixel data")
    choice = choose(representations, stored.transfer_syntax_uid, pixels)
    if choice is None:
        raise not_acceptable(stored.transfer_syntax_uid, pixels)
    if choice.native and stored.transfer_syntax_uid in UNCOMPRESSED:
        return _native_pixel_data(stored, known)
    # Compressed: a frame is one item at least, 8 bytes of header: a NumberOfFrames the file
    # cannot hold is the sender's word against its own data (and a list of a billion parts).
    if pixels.number_of_frames > stored.size // 8:
        raise NotAcceptable(f"the instance declares {pixels.number_of_frames} frames, more than its "
                            f"{stored.size} bytes can hold")
    numbers = range(1, pixels.number_of_frames + 1)
    bodies = frame_bodies(archive(), transcode_limits(), stored, known.details, pixels, numbers, choice)
    if choice.native:   # decoded: one value, the frames one after the other
        return Value(frames=bodies, size=pixels.native_length)
    return _frames_response(choice, bodies)


def _frames_response(choice: Choice, bodies: list) -> Response:
    return multipart_response([multipart.Part({"Content-Type": choice.content_type}, body) for body in bodies],
                              choice.media_type)


def _native_pixel_data(stored: StoredInstance, known: StoredPixels) -> Value:
    details = known.details
    if value_in_place(stored, details):
        return Value(archive=archive(), stored=stored, offset=details.pixel_offset,
                      size=details.pixel_length)
    if stored.transfer_syntax_uid not in UNCOMPRESSED:
        raise NotAcceptable("this pixel data is compressed; ask for it at .../bulk/7FE00010")
    # Big endian or deflated: the native frames one after the other, as FrameReader gives them.
    pixels = known.pixels
    if pixels is None:
        raise NotFound("the instance has no pixel data")
    reader = FrameReader(archive(), stored, details, pixels)
    transcode_limits().check(reader.cost(pixels.number_of_frames))
    return Value(frames=([frame] for frame, _ in reader.all()), size=pixels.native_length)


def _value(stored: StoredInstance, tags: list[int], items: list[int], seed: str | None) -> Value:
    """A value of the data set, or of its anonymised copy (what the profile removed is not there)."""
    ds = stored_header(archive(), stored)
    if seed is not None:
        deidentify(ds, seed, pixels=False)
    try:
        for tag, item in zip(tags, items):
            if item < 1:   # items are numbered from 1 (PS3.18 §10.4.1.1.5): no negative indexing
                raise IndexError(item)
            ds = ds[tag].value[item - 1]
        elem = ds[tags[-1]]
    except (KeyError, IndexError, TypeError):
        raise NotFound("the instance has no such bulk data") from None
    if not isinstance(elem.value, (bytes, bytearray)):
        raise NotFound("that attribute is not bulk data")
    return Value(bytes(elem.value))


def single_part(value: Value, content_type: str = OCTET_STREAM) -> Response:
    """One value as the whole answer, with one byte range when asked (206)."""
    headers = {"Accept-Ranges": "bytes" if value.ranges else "none"}
    asked = request.headers.get("Range") if value.ranges else None
    if asked and asked.split("=", 1)[0].strip().lower() != "bytes":
        asked = None   # a range unit not understood is ignored: the whole value (RFC 9110 §14.2)
    start, length, status = 0, value.size, 200
    if asked:
        match = _RANGE.fullmatch(asked.strip())
        if not match or not (match[1] or match[2]):
            raise RangeNotSatisfiable("Range: only one byte range (bytes=a-b, a- or -n, at most 18 digits each) "
                                      "is supported",
                                      {"Content-Range": f"bytes */{value.size}"})
        if match[1]:
            start = int(match[1])
            end = min(int(match[2]), value.size - 1) if match[2] else value.size - 1
        else:
            start, end = max(0, value.size - int(match[2])), value.size - 1
        if start >= value.size or start > end:
            raise RangeNotSatisfiable(f"the range starts beyond the {value.size} bytes of the value",
                                      {"Content-Range": f"bytes */{value.size}"})
        length, status = end - start + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{value.size}"
    response = Response(value.chunks(start, length), status=status, content_type=content_type, headers=headers,
                        direct_passthrough=True)
    response.content_length = length
    return response
