"""STOW-RS: POST /studies and POST /studies/{study} (PS3.18 §10.5).

The body is read in chunks and decoded as it arrives; each part is received into a
file of the blob store's, which storing moves into place (where the store has none,
S3, a spool: memory up to a limit, then a file under the data directory) while its
digest is computed, stored, and released before the next part is read.
"""
from __future__ import annotations

import errno
import hashlib
import tempfile
from typing import BinaryIO, Iterator, Union

import orjson
from flask import Response, request

from storage import StoreOutcome
from storage.status import FailureReason

from . import reject_rs, stow_metadata, stow_response
from .rejection import KEY_OBJECT_SELECTION
from .. import metrics
from ..auth import DELETED_ENVIRON_KEY, PERMISSIONS_ENVIRON_KEY
from ..wire.dicom_xml import json_to_xml
from ..errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from ..wire.media import DICOM, DICOM_JSON, DICOM_XML, MULTIPART_RELATED, MalformedMediaType, parse_media_type, response_format
from ..wire.multipart import MultipartDecoder, MultipartError, PartLimit, spooled_parts
from ..web import accepted, archive, base_url, require_uids, settings, warning

READ_SIZE = 1 << 20
BATCH_SIZE = 50          # instances whose catalog rows are committed together
MAX_WARNING_HEADERS = 10


def store(study: str | None = None) -> Response:
    require_uids(study=study)
    answer_as = response_format(accepted(), (DICOM_JSON, DICOM_XML, "application/json"))
    if answer_as is None:
        raise NotAcceptable("the STOW-RS response is sent as application/dicom+json or application/dicom+xml")
    config = settings()
    if request.content_length is not None and request.content_length > config.max_request_bytes:
        raise PayloadTooLarge(f"the request body exceeds the limit of {config.max_request_bytes} bytes")

    granted = request.environ.get(PERMISSIONS_ENVIRON_KEY)   # None: authentication is off
    batch = archive().batch(may_replace=granted is None or "replace" in granted.split(","))
    try:
        for received in _received(request.stream, request.headers.get("Content-Type", ""), study):
            if isinstance(received, StoreOutcome):
                batch.add_failure(received)
                continue
            spool, digest = received
            batch.add(spool, digest, expected_study=study)
            if len(batch) >= BATCH_SIZE:
                batch.commit()
    except OSError as exc:   # the disk is full while a part is received: it fails, those before are kept
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        batch.add_failure(StoreOutcome(None, None, failure=FailureReason.OUT_OF_RESOURCES, message=(
            "no space is left on this server to receive the instance; the parts after it were not read")))
    outcomes = batch.commit()
    unapplied = _apply_rejection_notes(outcomes, granted)
    stored = sum(1 for o in outcomes if o.stored)
    metrics.INSTANCES.labels("stored").inc(stored)
    metrics.INSTANCES.labels("failed").inc(len(outcomes) - stored)
    if not outcomes:
        raise BadRequest("the request body holds no DICOM instance")

    model = stow_response.response_model(outcomes, base_url(), study)
    if answer_as == DICOM_XML:
        body, mimetype = json_to_xml(model), DICOM_XML
    else:
        body, mimetype = orjson.dumps(model), DICOM_JSON
    response = Response(body, status=stow_response.response_status(outcomes), mimetype=mimetype)
    for outcome in [o for o in outcomes if not o.stored][:MAX_WARNING_HEADERS]:
        response.headers.add("Warning", warning(f"{outcome.sop_instance_uid or 'part'}: {outcome.message}"))
    if unapplied:
        response.headers.add("Warning", warning("Rejection Notes were stored as documents, but this peer has no "
                                                "delete permission: they rejected nothing"))
    return response


def _apply_rejection_notes(outcomes: list[StoreOutcome], granted: str | None) -> bool:
    """IOCM: a Rejection Note received rejects what it names, for a peer that may delete (or with
    authentication off); True when notes were stored without effect (the peer may not delete)."""
    if not any(o.stored and o.sop_class_uid == KEY_OBJECT_SELECTION for o in outcomes):
        return False
    notes = reject_rs.received_notes(outcomes)
    if not notes:
        return False
    if granted is not None and "delete" not in granted.split(","):
        return True
    request.environ[DELETED_ENVIRON_KEY] = reject_rs.apply_notes(notes)
    return False


Received = Union[tuple[BinaryIO, str], StoreOutcome]


def _received(stream: BinaryIO, content_type: str, study_in_url: str | None = None) -> Iterator[Received]:
    """Yield each received instance as a (spooled file, sha256 hex) pair, valid
    until the next one is asked for, or a failed outcome for a part that is not
    an instance at all."""
    try:
        media = parse_media_type(content_type) if content_type else None
    except MalformedMediaType as exc:
        raise BadRequest(str(exc)) from None
    if media is None:
        raise UnsupportedMediaType('Content-Type must be multipart/related; type="application/dicom"')
    if media.type == DICOM:
        yield from _single(stream)
        return
    if media.type != MULTIPART_RELATED:
        raise UnsupportedMediaType(f"cannot store {media.type}: send multipart/related; type=\"application/dicom\"")
    inner = (media.param("type") or DICOM).lower()
    if inner not in (DICOM, DICOM_JSON, DICOM_XML):
        raise UnsupportedMediaType(f"multipart/related parts of type {inner} are not supported; send "
                                   "application/dicom instances, or application/dicom+json or +xml metadata")
    boundary = media.param("boundary")
    if not boundary:
        raise BadRequest("multipart/related Content-Type has no boundary parameter")
    config = settings()
    try:
        decoder = MultipartDecoder(boundary, max_parts=config.stow_max_parts)
    except MultipartError as exc:
        raise BadRequest(f"Content-Type: {exc}") from None
    if inner == DICOM:
        yield from _parts(stream, decoder)
        return
    parts = list(_every_part(stream, decoder))
    try:
        yield from stow_metadata.instances(parts, study_in_url, config.spool_dir, config.spool_memory_bytes,
                                           config.transcode_max_bytes)
    finally:
        for part in parts:
            part.body.close()


def _every_part(stream: BinaryIO, decoder: MultipartDecoder) -> Iterator[stow_metadata.BodyPart]:
    """Every part of a metadata request, spooled: the metadata names bulk parts that may come
    in any order, so all are received before any instance is built."""
    config = settings()
    in_memory = 0   # parts held in memory together: at most metadata_parts_in_memory_bytes, then on disk

    def file_for(headers: dict[str, str]) -> BinaryIO:
        nonlocal in_memory
        if in_memory + config.spool_memory_bytes > config.metadata_parts_in_memory_bytes:
            return tempfile.TemporaryFile(dir=config.spool_dir)
        in_memory += config.spool_memory_bytes
        return _spool()

    try:
        for part in spooled_parts(_chunks(stream), decoder, file_for):
            yield stow_metadata.body_part(part.headers, part.file)
    except PartLimit as exc:
        raise PayloadTooLarge(f"{exc} (DICOMWEB_STOW_MAX_PARTS); store the instances in several requests") from None
    except MultipartError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None


def _spool() -> tempfile.SpooledTemporaryFile:
    config = settings()
    return tempfile.SpooledTemporaryFile(max_size=config.spool_memory_bytes, dir=config.spool_dir)


def _receiving_file() -> BinaryIO:
    """Where an instance part is received: a file of the blob store's, which storing moves into
    place (no copy, no memory held), or a spool where the store has none (S3)."""
    return archive().receiving_file() or _spool()


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    limit = settings().max_request_bytes
    received = 0
    while chunk := stream.read(READ_SIZE):
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        yield chunk


def _single(stream: BinaryIO) -> Iterator[tuple[BinaryIO, str]]:
    spool, digest = _receiving_file(), hashlib.sha256()
    with spool:
        for chunk in _chunks(stream):
            spool.write(chunk)
            digest.update(chunk)
        if not spool.tell():
            raise BadRequest("the request body is empty: it holds no DICOM instance")   # PS3.18 table 10.5.3-1
        spool.seek(0)
        yield spool, digest.hexdigest()


def _parts(stream: BinaryIO, decoder: MultipartDecoder) -> Iterator[Received]:
    """Each part as a (spool, sha256) pair, or the failed outcome of a part that is not
    application/dicom; the parts before a malformed or excess one are kept."""
    yielded = 0
    try:
        for part in spooled_parts(_chunks(stream), decoder, lambda h: None if _refusal(h) else _receiving_file(),
                                  digest=True):
            yielded += 1
            if part.file is None:
                yield _refusal(part.headers)
                continue
            with part.file:
                yield part.file, part.sha256
    except PartLimit as exc:   # what came before is stored; the rest is not read
        yield StoreOutcome(None, None, failure=FailureReason.OUT_OF_RESOURCES,
                           message=f"{exc} (DICOMWEB_STOW_MAX_PARTS): those beyond were not read")
    except MultipartError as exc:
        if not yielded:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        yield StoreOutcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND,
                           message=f"malformed multipart body: {exc}")


def _refusal(headers: dict[str, str]) -> StoreOutcome | None:
    """A failed outcome for a part declared as something other than application/dicom."""
    declared = headers.get("content-type")
    if declared is None:
        return None
    try:
        if parse_media_type(declared).type == DICOM:
            return None
    except MalformedMediaType:
        pass
    return StoreOutcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND,
                        message=f"part of type {declared[:80]} is not application/dicom")
