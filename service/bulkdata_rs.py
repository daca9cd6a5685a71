"""WADO-RS bulk data: the targets of the BulkDataURIs in metadata (PS3.18 §10.4.1.1.5).

``…/instances/{i}/bulk/{tag}`` and, inside sequences, ``…/bulk/{tag}/{item}/{tag}``.
Native pixel data is read by byte range where it lies in the blob; other values
from the data set read up to Pixel Data. ``multipart/related; type="application/octet-stream"``
by default; single-part ``application/octet-stream`` when asked for first, where an
HTTP ``Range`` (one range) is honoured.
"""
from __future__ import annotations

import re
import warnings
from typing import Iterator

import pydicom
from flask import Blueprint, Response, request

from storage import StoredInstance
from storage.blobs import BlobStore, iter_chunks
from transcode.syntaxes import UNCOMPRESSED

from . import multipart
from .errors import BadRequest, DicomWebError, NotAcceptable, NotFound
from .frames_rs import compressed_frame_bodies
from .media import OCTET_STREAM, MediaType, octet_stream_syntaxes
from .retrieve import IN_PLACE, pixel_bytes
from .web import accepted, archive, require_uids

bp = Blueprint("bulkdata_rs", __name__)

_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}


class RangeNotSatisfiable(DicomWebError):
    status, title = 416, "Range Not Satisfiable"


class _Bytes:
    """A value to send: bytes in memory, or a span of a blob read when iterated."""

    def __init__(self, data: bytes = b"", blobs: BlobStore | None = None, key: str = "", offset: int = 0,
                 size: int | None = None) -> None:
        self.data, self.blobs, self.key, self.offset = data, blobs, key, offset
        self.size = len(data) if size is None else size

    def chunks(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        length = self.size - start if length is None else length
        if self.blobs is None:
            yield self.data[start:start + length]
        else:
            yield from iter_chunks(self.blobs.open(self.key, self.offset + start, length))

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()


@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulk/<path:path>")
def retrieve_bulkdata(study: str, series: str, instance: str, path: str) -> Response:
    require_uids(study=study, series=series, instance=instance)
    if not _PATH.fullmatch(path):
        raise BadRequest(f"bulk data path {path[:80]!r} is not tag[/item/tag…]")
    media = accepted()
    single = bool(media) and media[0].type == OCTET_STREAM
    found = archive().instances(study, series, instance)
    if not found:
        raise NotFound("no such instance in the archive")
    compressed_pixels = found[0].transfer_syntax_uid not in UNCOMPRESSED and path.upper() == "7FE00010"
    if not compressed_pixels and not single and not octet_stream_syntaxes(media):
        raise NotAcceptable('bulk data is sent as multipart/related; type="application/octet-stream" '
                            "or application/octet-stream")
    steps = path.split("/")
    tags, items = [int(t, 16) for t in steps[::2]], [int(i) for i in steps[1::2]]
    if compressed_pixels:
        return _compressed_pixel_data(found[0], media)
    value = _pixel_data(found[0]) if len(tags) == 1 and tags[0] in PIXEL_TAGS else _value(found[0], tags, items)
    if single:
        return _single_part(value)
    boundary = multipart.new_boundary()
    return Response(multipart.encode_parts([multipart.Part({"Content-Type": OCTET_STREAM}, value)], boundary),
                    direct_passthrough=True, content_type=f'multipart/related; type="{OCTET_STREAM}"; '
                                                          f"boundary={boundary}")


def _compressed_pixel_data(stored: StoredInstance, media: list[MediaType]) -> Response:
    """Compressed pixel data as bulk data: every frame, each its own part (PS3.18 §8.7.3.5)."""
    details = archive().details(stored)
    count = len(details.fragments or [])
    media_type, content_type, bodies = compressed_frame_bodies(stored, details, list(range(1, count + 1)), media)
    parts = [multipart.Part({"Content-Type": content_type}, body) for body in bodies]
    boundary = multipart.new_boundary()
    return Response(multipart.encode_parts(parts, boundary), direct_passthrough=True,
                    content_type=f'multipart/related; type="{media_type}"; boundary={boundary}')


def _pixel_data(stored: StoredInstance) -> _Bytes:
    details = archive().details(stored)
    if stored.transfer_syntax_uid in IN_PLACE and details.pixel_offset is not None:
        return _Bytes(blobs=archive().blobs, key=stored.blob_key, offset=details.pixel_offset,
                      size=details.pixel_length)
    return _Bytes(pixel_bytes(archive(), stored))


def _value(stored: StoredInstance, tags: list[int], items: list[int]) -> _Bytes:
    with archive().spooled(stored) as spool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(spool, stop_before_pixels=True)
    try:
        for tag, item in zip(tags, items):
            ds = ds[tag].value[item - 1]
        elem = ds[tags[-1]]
    except (KeyError, IndexError, TypeError):
        raise NotFound("the instance has no such bulk data") from None
    if not isinstance(elem.value, (bytes, bytearray)):
        raise NotFound("that attribute is not bulk data")
    return _Bytes(bytes(elem.value))


def _single_part(value: _Bytes) -> Response:
    headers = {"Accept-Ranges": "bytes"}
    asked = request.headers.get("Range")
    start, length, status = 0, value.size, 200
    if asked:
        match = _RANGE.fullmatch(asked.strip())
        if not match or not (match[1] or match[2]):
            raise RangeNotSatisfiable("only one byte range (bytes=a-b, a- or -n) is supported",
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
    response = Response(value.chunks(start, length), status=status, content_type=OCTET_STREAM, headers=headers,
                        direct_passthrough=True)
    response.content_length = length
    return response
