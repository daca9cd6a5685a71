"""Planning and streaming a WADO-RS retrieve of DICOM instances (PS3.18 §10.4)."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import pydicom

from storage import Archive, StoredInstance
from storage.blobs import CHUNK_SIZE, iter_chunks
from transcode import can_transcode, transcode
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, describe

from . import multipart, urls
from .errors import NotAcceptable
from .media import ANY_TRANSFER_SYNTAX, DICOM, Representation


@dataclass(frozen=True)
class PlannedPart:
    instance: StoredInstance
    transfer_syntax: str
    converted: bytes | None = None    # the instance already re-encoded (see convert_now)

    @property
    def as_stored(self) -> bool:
        return self.transfer_syntax == self.instance.transfer_syntax_uid

    @property
    def content_type(self) -> str:
        return f"{DICOM}; transfer-syntax={self.transfer_syntax}"


@dataclass(frozen=True)
class Plan:
    multipart: bool
    parts: list[PlannedPart]
    skipped: list[StoredInstance]


def plan(instances: Sequence[StoredInstance], representations: Sequence[Representation],
         single_part_allowed: bool) -> Plan:
    """Choose a response form and, per instance, the first acceptable transfer syntax.

    The form (multipart or single part) is that of the most preferred usable
    representation; single part only where the resource is one instance. Each
    part may have its own syntax, named in its Content-Type. Instances no
    acceptable syntax fits are skipped; if all are, the answer is 406.
    """
    usable = [r for r in representations if r.multipart or single_part_allowed]
    if not usable:
        raise NotAcceptable("no acceptable media type: this resource is sent as "
                            'multipart/related; type="application/dicom"')
    form = usable[0].multipart
    candidates = [r.transfer_syntax for r in usable if r.multipart == form]
    parts, skipped = [], []
    for instance in instances:
        stored = instance.transfer_syntax_uid
        chosen = next((stored if ts == ANY_TRANSFER_SYNTAX else ts for ts in candidates
                       if ts == ANY_TRANSFER_SYNTAX or can_transcode(stored, ts)), None)
        if chosen is None:
            skipped.append(instance)
        else:
            parts.append(PlannedPart(instance, chosen))
    if not parts:
        stored_syntaxes = sorted({describe(i.transfer_syntax_uid) for i in skipped})
        raise NotAcceptable(
            "the requested transfer syntax cannot be produced from the stored "
            f"{', '.join(stored_syntaxes)}; ask for transfer-syntax=* to receive the data as stored"
        )
    return Plan(form, parts, skipped)


def convert(archive: Archive, part: PlannedPart) -> bytes:
    """The instance re-encoded in its planned syntax; ValueError if its data cannot be."""
    with archive.spooled(part.instance) as spool:
        return transcode(spool, part.transfer_syntax, part.instance.transfer_syntax_uid)


def convert_now(archive: Archive, part: PlannedPart) -> PlannedPart:
    """Convert before the answer starts, so that a failure can still be a 406 and not a
    broken stream: done when a response holds a single instance."""
    if part.as_stored:
        return part
    try:
        return replace(part, converted=convert(archive, part))
    except ValueError as exc:
        raise NotAcceptable(f"the instance cannot be sent in {describe(part.transfer_syntax)}: {exc}; "
                            "ask for transfer-syntax=* to receive it as stored") from None


def body_chunks(archive: Archive, part: PlannedPart) -> Iterator[bytes]:
    """The bytes of one instance in its planned syntax, read lazily. A conversion that
    fails here, with the answer under way, ends the stream (and is logged)."""
    if part.as_stored:
        yield from iter_chunks(archive.open(part.instance))
        return
    data = part.converted if part.converted is not None else convert(archive, part)
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start:start + CHUNK_SIZE]


def part_size(part: PlannedPart) -> int | None:
    if part.as_stored:
        return part.instance.size
    return None if part.converted is None else len(part.converted)


def multipart_body(archive: Archive, parts: Sequence[PlannedPart], base_url: str,
                   boundary: str) -> tuple[Iterator[bytes], int | None]:
    """The multipart body as a generator, and its length when it is known up front."""
    encoded = [
        multipart.Part(
            {"Content-Type": p.content_type,
             "Content-Location": urls.retrieve_url(base_url, p.instance.study_uid, p.instance.series_uid,
                                                   p.instance.sop_instance_uid)},
            _Lazy(archive, p),
        )
        for p in parts
    ]
    length = None
    sizes = [part_size(p) for p in parts]
    if None not in sizes:
        length = sum(multipart.part_header_length(e.headers, boundary, i == 0) + size
                     for i, (e, size) in enumerate(zip(encoded, sizes)))
        length += multipart.closing_length(boundary, bool(parts))
    return multipart.encode_parts(encoded, boundary), length


class _Lazy:
    """Opens the blob only when the encoder reaches the part, one at a time."""

    def __init__(self, archive: Archive, part: PlannedPart) -> None:
        self.archive = archive
        self.part = part

    def __iter__(self) -> Iterator[bytes]:
        return body_chunks(self.archive, self.part)


# Syntaxes whose native pixel bytes are little endian, readable in place from the blob.
IN_PLACE = {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN}


def pixel_bytes(archive: Archive, stored: StoredInstance) -> bytes:
    """The native pixel data of an uncompressed instance as little endian bytes, reading it whole
    (for big endian and deflated instances, whose pixels cannot be read in place)."""
    with archive.spooled(stored) as spool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if stored.transfer_syntax_uid in IN_PLACE:
            return pydicom.dcmread(spool).PixelData
        return pydicom.dcmread(io.BytesIO(transcode(spool, EXPLICIT_VR_LITTLE_ENDIAN,
                                                    stored.transfer_syntax_uid))).PixelData
