"""WADO-RS frames (PS3.18 §10.4.1.1.4).

A frame is read by byte range from the blob store, at the place recorded at
ingest: the span of a native frame, or the fragments of a compressed one (sent
as stored, in its syntax's media type). One frame never costs reading the
whole instance. Big endian and deflated instances, whose pixels cannot be read
in place, are converted once per request.
"""
from __future__ import annotations

import re
from typing import Iterator

import orjson
from flask import Blueprint, Response

from storage import StoredInstance
from storage.blobs import BlobStore, iter_chunks
from storage.catalog import InstanceDetails
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES, UNCOMPRESSED, describe

from . import multipart
from .errors import BadRequest, NotAcceptable, NotFound
from .media import (
    ANY_TRANSFER_SYNTAX, OCTET_STREAM, MediaType, compressed_frames_acceptable, octet_stream_syntaxes,
)
from .retrieve import IN_PLACE, pixel_bytes
from .web import accepted, archive, base_url, require_uids

bp = Blueprint("frames_rs", __name__)

_FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5], in the order asked; 400 for anything else."""
    if not _FRAME_LIST.fullmatch(text) or len(text) > 10_000:
        raise BadRequest(f"frame list {text[:80]!r} is not a comma-separated list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    require_uids(study=study, series=series, instance=instance)
    numbers = parse_frame_list(frames)
    accept = accepted()
    found = archive().instances(study, series, instance)
    if not found:
        raise NotFound("no such instance in the archive")
    stored = found[0]
    details = archive().details(stored)
    location = f"{base_url()}/studies/{study}/series/{series}/instances/{instance}/frames/"
    if stored.transfer_syntax_uid in UNCOMPRESSED:
        media_type, content_type, bodies = _native_frames(stored, details, numbers, accept)
    else:
        media_type, content_type, bodies = compressed_frame_bodies(stored, details, numbers, accept)
    parts = [multipart.Part({"Content-Type": content_type, "Content-Location": f"{location}{n}"}, body)
             for n, body in zip(numbers, bodies)]
    boundary = multipart.new_boundary()
    return Response(multipart.encode_parts(parts, boundary), direct_passthrough=True,
                    content_type=f'multipart/related; type="{media_type}"; boundary={boundary}')


def _native_frames(stored: StoredInstance, details: InstanceDetails, numbers: list[int],
                   accept: list[MediaType]) -> tuple[str, str, list]:
    syntaxes = octet_stream_syntaxes(accept)
    if not any(s in (ANY_TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN, stored.transfer_syntax_uid) for s in syntaxes):
        raise NotAcceptable('uncompressed frames are sent as multipart/related; type="application/octet-stream" '
                            "in Explicit VR Little Endian or as stored")
    frame_size, count = _geometry(orjson.loads(details.metadata))
    _check_range(numbers, count)
    offset, length = details.pixel_offset, details.pixel_length
    if stored.transfer_syntax_uid in IN_PLACE and offset is not None and length >= count * frame_size:
        blobs = archive().blobs
        bodies = [_FrameRange(blobs, stored.blob_key, [(offset + (n - 1) * frame_size, frame_size)])
                  for n in numbers]
    else:
        pixels = pixel_bytes(archive(), stored)
        bodies = [[pixels[(n - 1) * frame_size:n * frame_size]] for n in numbers]
    # Native little endian pixel bytes are the same in every little endian syntax.
    return OCTET_STREAM, f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}", bodies


def compressed_frame_bodies(stored: StoredInstance, details: InstanceDetails, numbers: list[int],
                            accept: list[MediaType]) -> tuple[str, str, list]:
    """Each frame's own fragments, as stored, in the media type of their syntax (PS3.18 §8.7.3.5)."""
    syntax = stored.transfer_syntax_uid
    media_type = TRANSFER_SYNTAXES[syntax].bulk_media_type if syntax in TRANSFER_SYNTAXES else OCTET_STREAM
    if not compressed_frames_acceptable(accept, media_type, syntax):
        raise NotAcceptable(f"frames of this instance are stored as {describe(syntax)} and can only be sent so "
                            f"({media_type}; transfer-syntax={syntax}); decompressed frames are not available yet")
    if not details.fragments:
        raise NotAcceptable("the fragments of this instance's pixel data cannot be told apart into frames "
                            "without decoding; retrieve the instance with transfer-syntax=* instead")
    _check_range(numbers, len(details.fragments))
    blobs = archive().blobs
    bodies = [_FrameRange(blobs, stored.blob_key, details.fragments[n - 1]) for n in numbers]
    return media_type, f"{media_type}; transfer-syntax={syntax}", bodies


def _check_range(numbers: list[int], count: int) -> None:
    bad = [n for n in numbers if n > count]
    if bad:
        raise BadRequest(f"frame {bad[0]} is out of range: the instance has {count} frame(s)")


def _geometry(model: dict) -> tuple[int, int]:
    """(bytes per frame, number of frames) from the instance's metadata."""
    def value(tag: str, default: int | None = None) -> int:
        values = model.get(tag, {}).get("Value")
        if not values:
            if default is None:
                raise NotFound("the instance has no pixel data")
            return default
        return int(values[0])

    if "7FE00010" not in model:
        raise NotFound("the instance has no pixel data")
    bits = value("00280100")
    if bits % 8:
        raise NotAcceptable(f"frames of {bits}-bit packed pixel data cannot be sent yet")
    size = value("00280010") * value("00280011") * value("00280002", 1) * bits // 8
    return size, value("00280008", 1)


class _FrameRange:
    """One frame's bytes — one span, or its fragments — read by range when the encoder reaches it."""

    def __init__(self, blobs: BlobStore, key: str, spans: list) -> None:
        self.blobs, self.key, self.spans = blobs, key, spans

    def __iter__(self) -> Iterator[bytes]:
        for start, length in self.spans:
            yield from iter_chunks(self.blobs.open(self.key, start, length))
