"""Whole instances: planning and streaming a retrieve of them (PS3.18 §10.4), each as stored or
converted, de-identified copies, and instances received from an upstream made into what was asked."""
from __future__ import annotations

import io
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import BinaryIO, Callable, Iterator, Sequence

import orjson
import pydicom

from storage import Archive, StoredInstance
from storage.blobs import iter_chunks
from storage.catalog import InstanceDetails
from storage.dataset import DEFLATED, CappedReads, InflationLimit, inflated_copy, transfer_syntax
from transcode import ConversionError, PixelDescription, can_transcode, transcode
from transcode.codecs import RECODABLE
from transcode.instance import streamable, uncompressed_pieces, write_streamed
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, UNCOMPRESSED, describe

from ..wire import multipart, urls
from .deidentify import NotDeidentifiable, deidentify, refusal_of_model
from ..errors import NotAcceptable
from ..limits import TranscodeLimits
from ..wire.media import ANY_TRANSFER_SYNTAX, DICOM, Representation
from .frames import FrameReader
from .header import read_header

Describer = Callable[[Sequence[StoredInstance]], dict]   # instances → {instance: PixelDescription | None}


@dataclass(frozen=True)
class PlannedPart:
    instance: StoredInstance
    transfer_syntax: str
    converted: BinaryIO | None = None    # the instance already re-encoded (see convert_now)
    seed: str | None = None              # de-identify the copy sent, with this seed (service.access.deidentify)

    @property
    def as_stored(self) -> bool:
        return self.transfer_syntax == self.instance.transfer_syntax_uid and self.seed is None

    @property
    def content_type(self) -> str:
        return f"{DICOM}; transfer-syntax={self.transfer_syntax}"


@dataclass(frozen=True)
class Plan:
    multipart: bool
    parts: list[PlannedPart]
    skipped: list[StoredInstance]
    refused: tuple[str, ...] = ()    # why instances were left out of an anonymised answer

    def warning(self, total: int) -> str:
        """The Warning text of an answer that leaves instances out (206)."""
        text = f"{len(self.skipped)} of {total} instances were left out"
        if self.refused:
            text += f"; {len(self.refused)} cannot be de-identified here ({self.refused[0]})"
        if len(self.skipped) > len(self.refused):
            text += ("; the stored transfer syntax of the others cannot be converted to an acceptable one, or "
                     "they are larger than this server converts")
        return text


def plan(instances: Sequence[StoredInstance], representations: Sequence[Representation],
         single_part_allowed: bool, describe_pixels: Describer, limits: TranscodeLimits) -> Plan:
    """Choose a response form and, per instance, the first acceptable transfer syntax.

    The form (multipart or single part) is that of the most preferred usable
    representation; single part only where the resource is one instance. Each
    part may have its own syntax, named in its Content-Type. A conversion needs the
    instance's pixel description (a compressed target must fit the image) and a size
    within the limits. Instances no acceptable syntax fits are skipped; if all are,
    the answer is 406, or 413 when size alone was the obstacle.
    """
    usable = [r for r in representations if r.multipart or single_part_allowed]
    if not usable:
        raise NotAcceptable("no acceptable media type: this resource is sent as "
                            'multipart/related; type="application/dicom"')
    form = usable[0].multipart
    candidates = [r.transfer_syntax for r in usable if r.multipart == form]
    converting = [i for i in instances if candidates[0] not in (ANY_TRANSFER_SYNTAX, i.transfer_syntax_uid)]
    pixels = describe_pixels(converting) if converting else {}
    parts, skipped, too_large = [], [], []
    for instance in instances:
        stored = instance.transfer_syntax_uid
        chosen = None
        for ts in candidates:
            if ts in (ANY_TRANSFER_SYNTAX, stored):
                chosen = stored
                break
            description = pixels.get(instance)
            if can_transcode(stored, ts, description):
                if limits.fits(max(instance.size, description.native_length if description else 0)):
                    chosen = ts
                    break
                too_large.append(instance)
        if chosen is None:
            skipped.append(instance)
        else:
            parts.append(PlannedPart(instance, chosen))
    if not parts:
        if too_large and len(instances) == 1:
            limits.check(max(instances[0].size, getattr(pixels.get(instances[0]), "native_length", 0)))
        stored_syntaxes = sorted({describe(i.transfer_syntax_uid) for i in skipped})
        raise NotAcceptable(
            "the requested transfer syntax cannot be produced from the stored "
            f"{', '.join(stored_syntaxes)}; ask for transfer-syntax=* to receive the data as stored"
        )
    return Plan(form, parts, skipped)


def anonymized(archive: Archive, planned: Plan, seed: str, limits: TranscodeLimits) -> Plan:
    """The plan of an anonymised answer, settled before it starts: instances the profile cannot
    make safe (service.access.deidentify.refusal, from their stored metadata) or too large to hold whole
    while de-identifying are left out, the others de-identified with ``seed``. When none is left,
    406 with the reason (413 when size was)."""
    parts, skipped, refused, too_large = [], list(planned.skipped), [], 0
    for part, model in zip(planned.parts, archive.metadata([p.instance for p in planned.parts])):
        model = orjson.loads(model)
        reason = refusal_of_model(model)
        pixels = PixelDescription.from_json(model)   # a deflated instance is held inflated
        held = max(part.instance.size, pixels.native_length if pixels is not None else 0)
        if reason is None and not limits.fits(held):
            too_large = max(too_large, held)
        elif reason is None:
            parts.append(replace(part, seed=seed))
            continue
        else:
            refused.append(reason)
        skipped.append(part.instance)
    if not parts:
        if refused:
            raise NotAcceptable(f"the instance cannot be sent anonymised: {refused[0]}" if len(skipped) == 1 else
                                f"no instance here can be sent anonymised: {refused[0]}")
        if too_large:
            limits.check(too_large, "de-identification")
        raise NotAcceptable("no instance here can be sent anonymised")
    return Plan(planned.multipart, parts, skipped, tuple(refused))


def pixel_descriptions(archive: Archive, instances: Sequence[StoredInstance]) -> dict:
    """Each instance's pixel description, from its stored metadata (None: no pixel data),
    keyed by the instance, in their order."""
    return {instance: PixelDescription.from_json(orjson.loads(model))
            for instance, model in zip(instances, archive.metadata(instances))}


def convert(archive: Archive, part: PlannedPart, limits: TranscodeLimits, before_answer: bool,
            details: InstanceDetails | None = None) -> BinaryIO:
    """The instance re-encoded in its planned syntax, in a spool file; ConversionError (or
    InflationLimit, NotDeidentifiable) if its data cannot be. Made frame by frame where the frames can be read one by one, so memory holds
    one frame; else (deflate, big endian, unmapped fragments, data after Pixel Data) whole."""
    out = limits.spool()
    source, target = part.instance.transfer_syntax_uid, part.transfer_syntax
    try:
        with limits.slot(before_answer):
            if part.seed is not None:
                limits.check(part.instance.size, "de-identification")   # it holds the whole data set
                _deidentified(archive, part, out)
                out.seek(0)
                return out
            frames = FrameReader.of(archive, part.instance, details) if streamable(target) else None
            if frames is not None and target in UNCOMPRESSED and frames.one_by_one():
                for piece in _uncompressed(frames, part, iter(frames.all())):
                    out.write(piece)
                out.seek(0)
                return out
            header = frames.streaming_header() if frames is not None else None
            if header is not None and ((source, target) not in RECODABLE or frames.details.fragments):
                write_streamed(header, frames.all(target), frames.pixels.number_of_frames, source, target, out)
            else:
                with archive.readable(part.instance) as (fp, syntax):
                    out.write(transcode(fp, target, syntax))
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise


def _deidentified(archive: Archive, part: PlannedPart, out: BinaryIO) -> None:
    """The instance in its planned syntax, de-identified: held in memory, as de-identification
    reads and rewrites the whole data set."""
    with archive.readable(part.instance) as (fp, syntax):
        data = fp.read() if syntax == part.transfer_syntax else transcode(fp, part.transfer_syntax, syntax)
    write_deidentified(data, part.seed, out)


def received_copy(spool: BinaryIO, candidates: Sequence[str], seed: str | None,
                  max_inflated_bytes: int) -> tuple[bytes, str, pydicom.Dataset] | None:
    """A received instance (an upstream's) in the first of ``candidates`` it can be sent in,
    de-identified with ``seed``: its bytes, that syntax, and its header as received; None when
    it has no acceptable form. Whatever a damaged instance raises, it raises."""
    spool = CappedReads(spool)   # a received file: a damaged length must not cost its declared size
    source = transfer_syntax(spool)
    with (inflated_copy(spool, max_inflated_bytes) if source == DEFLATED else nullcontext(spool)) as readable:
        ds = read_header(readable)
        pixels = PixelDescription.from_dataset(ds) if "Rows" in ds else None
        target = next((source if ts in (ANY_TRANSFER_SYNTAX, source) else ts for ts in candidates
                       if ts in (ANY_TRANSFER_SYNTAX, source) or can_transcode(source, ts, pixels)), None)
        if target is None:
            return None
        data = spool.read() if target == source else transcode(readable, target, str(ds.file_meta.TransferSyntaxUID))
    if seed is not None:
        out = io.BytesIO()
        write_deidentified(data, seed, out)
        data = out.getvalue()
    return data, target, ds


def write_deidentified(data: bytes, seed: str, out: BinaryIO) -> None:
    """A Part 10 instance, de-identified (service.access.deidentify), written to ``out``; NotDeidentifiable
    (a ValueError) when the profile cannot make it safe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        deidentify(ds, seed)
        ds.save_as(out)


def convert_now(archive: Archive, part: PlannedPart, limits: TranscodeLimits) -> PlannedPart:
    """Convert before the answer starts, so that a failure can still be a 406 (or a 503 when
    the worker is busy) and not a broken stream: done when a response holds a single instance."""
    if part.as_stored:
        return part
    try:
        return replace(part, converted=convert(archive, part, limits, before_answer=True))
    except (ConversionError, InflationLimit, NotDeidentifiable) as exc:   # the data's; any other is ours
        raise NotAcceptable(f"the instance cannot be sent in {describe(part.transfer_syntax)}: {exc}; "
                            "ask for transfer-syntax=* to receive it as stored") from None


def body_chunks(archive: Archive, part: PlannedPart, limits: TranscodeLimits,
                ahead: "DetailsAhead | None" = None) -> Iterator[bytes]:
    """The bytes of one instance in its planned syntax, read lazily. A conversion that
    fails here, with the answer under way, ends the stream (and is logged)."""
    if part.as_stored:
        yield from archive.body(part.instance)
        return
    if part.converted is not None:
        yield from iter_chunks(part.converted)   # closes the spool
        return
    details = ahead.get(part.instance) if ahead else None
    pieces = _pieces_as_read(archive, part, limits, details)
    yield from pieces if pieces is not None else \
        iter_chunks(convert(archive, part, limits, before_answer=False, details=details))


def _pieces_as_read(archive: Archive, part: PlannedPart, limits: TranscodeLimits,
                    details: InstanceDetails | None) -> Iterator[bytes] | None:
    """An instance converted to an uncompressed syntax as the answer reads it, where its frames can
    be read one by one: the data set, then each frame made in a conversion slot of its own, so
    that neither the instance nor a slot is held while the client reads (no spool written and
    read back either: a tenth of a decoded study's time). None for any other conversion."""
    if part.seed is not None or part.transfer_syntax not in UNCOMPRESSED:
        return None
    frames = FrameReader.of(archive, part.instance, details)
    if frames is None or not frames.one_by_one():
        return None

    def each_in_a_slot() -> Iterator[tuple[bytes, PixelDescription]]:
        for number in range(1, frames.pixels.number_of_frames + 1):
            with limits.slot(before_answer=False):
                frame = frames.native(number)
            yield frame

    return _uncompressed(frames, part, each_in_a_slot())


def _uncompressed(frames: FrameReader, part: PlannedPart,
                  each: Iterator[tuple[bytes, PixelDescription]]) -> Iterator[bytes]:
    target = part.transfer_syntax
    return uncompressed_pieces(frames.streaming_header, each, frames.pixels.number_of_frames,
                               part.instance.transfer_syntax_uid, target,
                               frames.decoded_prefix() if target == EXPLICIT_VR_LITTLE_ENDIAN else None)


class DetailsAhead:
    """The catalog details of the parts an answer converts frame by frame, read DETAILS_AHEAD at a
    time as the answer reaches them: one catalog read where there was one a part (a tenth of a
    decoded study's time), and no more of them held than that."""

    def __init__(self, archive: Archive, parts: Sequence[PlannedPart]) -> None:
        self.archive = archive
        self.converting = [p.instance for p in parts if not p.as_stored and p.converted is None
                           and p.seed is None and streamable(p.transfer_syntax)]
        self.position = {instance.pk: i for i, instance in enumerate(self.converting)}
        self.held: dict[int, InstanceDetails] = {}

    def get(self, instance: StoredInstance) -> InstanceDetails | None:
        if instance.pk not in self.held and instance.pk in self.position:
            start = self.position[instance.pk]
            self.held = self.archive.details_of(self.converting[start:start + DETAILS_AHEAD])
        return self.held.pop(instance.pk, None)


DETAILS_AHEAD = 32


def part_size(part: PlannedPart) -> int | None:
    if part.as_stored:
        return part.instance.size
    return None if part.converted is None else _size(part.converted)


def _size(spool: BinaryIO) -> int:
    size = spool.seek(0, 2)
    spool.seek(0)
    return size


def multipart_body(archive: Archive, parts: Sequence[PlannedPart], base_url: str, boundary: str,
                   limits: TranscodeLimits) -> tuple[Iterator[bytes], int | None]:
    """The multipart body as a generator, and its length when it is known up front."""
    ahead = DetailsAhead(archive, parts)
    encoded = [
        multipart.Part(
            {"Content-Type": p.content_type} if p.seed is not None else   # no original UIDs in anonymised answers
            {"Content-Type": p.content_type,
             "Content-Location": urls.retrieve_url(base_url, p.instance.study_uid, p.instance.series_uid,
                                                   p.instance.sop_instance_uid)},
            _Lazy(archive, p, limits, ahead),
            part_size(p),
        )
        for p in parts
    ]
    return multipart.encode_parts(encoded, boundary), multipart.encoded_length(encoded, boundary)


class _Lazy:
    """Opens the blob only when the encoder reaches the part, one at a time."""

    def __init__(self, archive: Archive, part: PlannedPart, limits: TranscodeLimits, ahead: DetailsAhead) -> None:
        self.archive, self.part, self.limits, self.ahead = archive, part, limits, ahead

    def __iter__(self) -> Iterator[bytes]:
        return body_chunks(self.archive, self.part, self.limits, self.ahead)
