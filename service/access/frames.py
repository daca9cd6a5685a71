"""Pixel data sent as frames or bulk data: which representation, and each frame's bytes.

A frame goes out as stored (its fragments, read by range), as native pixels (read
by range from an uncompressed blob, or decoded from its own fragments), or encoded
in another syntax from its native pixels. Converted frames are made one at a time,
as the response reaches them, each in one of the worker's transcoding slots; the
first is made before the answer starts, so that its failure is still a 406.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import orjson
import pydicom

from storage import Archive, StoredInstance
from storage.blobs import BodyPiece
from storage.catalog import InstanceDetails
from storage.dataset import DEFLATED, PixelLocation, decoded_prefix, read_until_pixels
from transcode import DECODABLE, CodecError, PixelDescription, can_transcode, transcode
from transcode.codecs import RECODABLE, decode_frame, encode_frame, recode_frame, repack_bits
from transcode.render import stored_bits
from transcode.syntaxes import (
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES, UNCOMPRESSED, describe,
)

from ..errors import NotAcceptable
from .header import read_header, stored_header
from ..limits import TranscodeLimits
from ..wire.media import ANY_TRANSFER_SYNTAX, OCTET_STREAM, PixelRepresentation

NATIVE = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)   # native little endian pixels: the same bytes
# Syntaxes whose native pixel bytes are little endian, readable in place from the blob.
IN_PLACE = frozenset(NATIVE)


@dataclass(frozen=True)
class Choice:
    media_type: str
    transfer_syntax: str

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"

    @property
    def native(self) -> bool:
        return self.media_type == OCTET_STREAM


def stored_media_type(syntax: str) -> str:
    known = TRANSFER_SYNTAXES.get(syntax)
    return known.bulk_media_type if known is not None and known.compressed else OCTET_STREAM


def choose(representations: Sequence[PixelRepresentation], stored: str, pixels: PixelDescription) -> Choice | None:
    """The first acceptable representation this instance's pixel data can be sent in."""
    as_stored = stored_media_type(stored)
    decodable = stored in UNCOMPRESSED or stored in DECODABLE
    for wanted in representations:
        if wanted.transfer_syntax == ANY_TRANSFER_SYNTAX:
            if wanted.media_type in ("*", as_stored) or (wanted.media_type == "image/*" and as_stored != OCTET_STREAM):
                return Choice(as_stored, EXPLICIT_VR_LITTLE_ENDIAN if stored in UNCOMPRESSED else stored)
        elif wanted.media_type == OCTET_STREAM:
            if wanted.transfer_syntax in NATIVE and decodable and (pixels.bits_allocated % 8 == 0
                                                                   or pixels.bits_allocated == 1):
                return Choice(OCTET_STREAM, wanted.transfer_syntax)
        elif wanted.transfer_syntax == stored or can_transcode(stored, wanted.transfer_syntax, pixels):
            return Choice(wanted.media_type, wanted.transfer_syntax)
    return None


def not_acceptable(stored: str, pixels: PixelDescription) -> NotAcceptable:
    """406 naming what this instance's pixel data can be sent as."""
    offers = [f"{stored_media_type(stored)} as stored ({describe(stored)})"]
    if stored in UNCOMPRESSED or stored in DECODABLE:
        offers.append(f"{OCTET_STREAM} (native pixels, {EXPLICIT_VR_LITTLE_ENDIAN})")
    offers += [f"{ts.bulk_media_type} ({ts.uid})" for ts in TRANSFER_SYNTAXES.values()
               if ts.compressed and ts.uid != stored and can_transcode(stored, ts.uid, pixels)]
    return NotAcceptable("no acceptable representation of this pixel data; it can be sent as " + ", ".join(offers))


def value_in_place(stored: StoredInstance, details: InstanceDetails) -> bool:
    """Whether the instance's native Pixel Data value can be read by range from its blob as it is."""
    return stored.transfer_syntax_uid in IN_PLACE and details.pixel_offset is not None


def frames_in_place(stored: StoredInstance, details: InstanceDetails, pixels: PixelDescription) -> bool:
    """Whether each of its frames can: the value in place, and as long as its description says."""
    return value_in_place(stored, details) and details.pixel_length >= pixels.frame_length * pixels.number_of_frames


def frame_bodies(archive: Archive, limits: TranscodeLimits, stored: StoredInstance, details: InstanceDetails,
                 pixels: PixelDescription, numbers: Sequence[int], choice: Choice) -> list[Iterable[bytes]]:
    """The bytes of each asked frame in the chosen representation, each read when iterated."""
    syntax = stored.transfer_syntax_uid
    if choice.transfer_syntax == syntax and syntax not in UNCOMPRESSED:
        if not details.fragments:
            raise NotAcceptable("the fragments of this instance's pixel data cannot be told apart into frames "
                                "without decoding; retrieve the instance with transfer-syntax=* instead")
        return [_Spans(archive, stored, details.fragments[n - 1]) for n in numbers]
    size = pixels.frame_length
    whole_bytes = pixels.bits_allocated % 8 == 0   # 1-bit frames are repacked by FrameReader
    if choice.native and whole_bytes and frames_in_place(stored, details, pixels):
        return [_Spans(archive, stored, [(details.pixel_offset + (n - 1) * size, size)]) for n in numbers]
    frames = FrameReader(archive, stored, details, pixels)
    limits.check(frames.cost(1))   # frames are made one at a time
    inflated = frames.inflated_frames() if choice.native and whole_bytes else None
    if inflated is not None:   # native frames of a deflated instance: read by range from its inflated copy
        copy, offset = inflated
        return [_CopySpan(copy, offset + (n - 1) * size, size) for n in numbers]
    bodies: list[Iterable[bytes]] = [_Converted(frames, n, choice, limits) for n in numbers]
    try:
        bodies[0] = [bodies[0].make(before_answer=True)]
    except CodecError as exc:
        raise NotAcceptable(f"the frames cannot be sent as {choice.content_type}: {exc}; ask for "
                            "transfer-syntax=* to receive them as stored") from None
    return bodies


@dataclass(frozen=True)
class StoredPixels:
    """What the catalog knows of an instance's pixel data, read and parsed once a request."""

    details: InstanceDetails          # its metadata, and where its pixel data lies in the blob
    model: dict                       # the metadata, parsed (DICOM JSON)
    pixels: PixelDescription | None   # None: no pixel data


def stored_pixels(archive: Archive, stored: StoredInstance, details: InstanceDetails | None = None) -> StoredPixels:
    """The instance's details (read now unless given), parsed."""
    details = details or archive.details(stored)
    model = orjson.loads(details.metadata)
    return StoredPixels(details, model, PixelDescription.from_json(model))


class FrameReader:
    """One instance's frames as native little endian pixels: read by range, decoded from their own
    fragments, read by range from the inflated copy of a deflated instance (made once per
    reader, on disk beyond 4 MiB), or, where none of these works (big endian, fragments not
    mapped to frames), from the whole instance converted once."""

    @classmethod
    def of(cls, archive: Archive, stored: StoredInstance, details: InstanceDetails | None = None) -> "FrameReader | None":
        found = stored_pixels(archive, stored, details)
        return None if found.pixels is None else cls(archive, stored, found.details, found.pixels)

    def __init__(self, archive: Archive, stored: StoredInstance, details: InstanceDetails,
                 pixels: PixelDescription) -> None:
        self.archive, self.stored, self.details, self.pixels = archive, stored, details, pixels
        self._whole: tuple[bytes, PixelDescription] | None = None
        self._inflated: tuple[BinaryIO, PixelLocation | None] | None = None
        self._prefix_bytes: bytes | None = None

    def _in_place(self) -> bool:
        return frames_in_place(self.stored, self.details, self.pixels)

    def inflated_frames(self) -> tuple[BinaryIO, int] | None:
        """(inflated copy, offset of the pixels in it) when a deflated instance's native frames lie
        there whole; the copy is made once per reader."""
        if self.stored.transfer_syntax_uid != DEFLATED:
            return None
        if self._inflated is None:
            copy = self.archive.inflated(self.stored)
            self._inflated = copy, read_until_pixels(copy)[1]
        copy, location = self._inflated
        if location is None or location.offset is None or location.length is None \
                or location.length < self.pixels.frame_length * self.pixels.number_of_frames:
            return None
        return copy, location.offset

    def one_by_one(self) -> bool:
        """Whether the frames can be read one by one (whole bytes a sample, and in place, mapped
        to fragments, or in a deflated instance's inflated copy)."""
        return self.pixels.bits_allocated % 8 == 0 and (self._prefix_end() is not None
                                                       or self.inflated_frames() is not None)

    def _prefix_end(self) -> int | None:
        """Where the blob's bytes before the pixel values end, when known: in place, the value's
        offset; encapsulated, that of the first fragment's data."""
        syntax, details = self.stored.transfer_syntax_uid, self.details
        return details.pixel_offset if self._in_place() else \
            details.fragments[0][0][0] if syntax not in UNCOMPRESSED and details.fragments else None

    def _prefix(self) -> bytes:
        if self._prefix_bytes is None:
            self._prefix_bytes = self.archive.read(self.stored, 0, self._prefix_end())
        return self._prefix_bytes

    def streaming_header(self) -> pydicom.Dataset | None:
        """The data set up to Pixel Data when the frames can be read one by one, else None. What
        follows Pixel Data (trailing padding, digital signatures, which a new encoding
        invalidates) is left out, as in transcode.transcode."""
        if self.pixels.bits_allocated % 8:
            return None
        if self._prefix_end() is not None:
            return read_header(io.BytesIO(self._prefix()))
        inflated = self.inflated_frames()
        return read_until_pixels(inflated[0])[0] if inflated is not None else None

    def decoded_prefix(self) -> bytes | None:
        """The bytes before Pixel Data of this instance decoded to Explicit VR Little Endian, taken
        from the blob, for an encapsulated, losslessly compressed instance of one sample a pixel,
        whose data set decoding leaves as it is (storage.dataset.decoded_prefix); None for others.
        Reading and writing that data set with pydicom instead took 1.7 ms of a 512² RLE slice's 4."""
        known = TRANSFER_SYNTAXES.get(self.stored.transfer_syntax_uid)
        if known is None or not known.compressed or known.lossy or self.pixels.samples_per_pixel != 1 \
                or self._prefix_end() is None:
            return None
        return decoded_prefix(self._prefix())

    def dataset(self) -> pydicom.Dataset:
        """The data set up to Pixel Data, read afresh: from the blob's prefix where Pixel Data's place is known."""
        header = self.streaming_header()
        if header is not None:
            return header
        return stored_header(self.archive, self.stored)

    def all(self, target: str | None = None) -> Iterator[tuple[bytes, PixelDescription]]:
        """Every frame, native; as stored where ``target`` rewrites the stored codestreams (RECODABLE)."""
        make = self.coded if (self.stored.transfer_syntax_uid, target) in RECODABLE else self.native
        return (make(n) for n in range(1, self.pixels.number_of_frames + 1))

    def coded(self, number: int) -> tuple[bytes, PixelDescription]:
        """A frame's codestream as stored, from its fragments."""
        return b"".join(self.archive.read(self.stored, start, length)
                        for start, length in self.details.fragments[number - 1]), self.pixels

    def cost(self, count: int) -> int:
        """Bytes held in memory to give ``count`` frames: those frames, or the whole instance
        decoded where frames cannot be read one by one."""
        if self._in_place() or self.details.fragments or self.stored.transfer_syntax_uid == DEFLATED:
            return self.pixels.frame_length * count
        return max(self.stored.size, self.pixels.native_length)

    def native(self, number: int) -> tuple[bytes, PixelDescription]:
        if self.pixels.bits_allocated == 1:
            return self._bit_frame(number), self.pixels
        syntax = self.stored.transfer_syntax_uid
        size = self.pixels.frame_length
        if self._in_place():
            span = [(self.details.pixel_offset + (number - 1) * size, size)]
            return self.archive.read(self.stored, *span[0]), self.pixels
        if syntax not in UNCOMPRESSED and self.details.fragments:
            return decode_frame(self.coded(number)[0], self.pixels, syntax)
        inflated = self.inflated_frames()
        if inflated is not None:
            copy, offset = inflated
            copy.seek(offset + (number - 1) * size)
            return copy.read(size), self.pixels
        pixels, description = self._decoded()
        size = description.frame_length
        return pixels[(number - 1) * size:number * size], description

    def _bit_frame(self, number: int) -> bytes:
        """A 1-bit frame, which may begin inside a byte, packed again from a byte's first bit: read by
        range where the value lies in place, else from the instance converted once."""
        start, length, shift = self.pixels.bit_span(number)
        count = self.pixels.rows * self.pixels.columns * self.pixels.samples_per_pixel
        if value_in_place(self.stored, self.details) and self.details.pixel_length >= start + length:
            data = self.archive.read(self.stored, self.details.pixel_offset + start, length)
        else:
            data = self._decoded()[0][start:start + length]
        return repack_bits(data, shift, count)

    def reduced(self, number: int, factor: int) -> "np.ndarray | None":
        """Frame ``number`` shrunk by ``factor`` (the mean of each factor × factor block), read in bands
        of rows, so that a thumbnail of a huge frame never holds the frame: for grey and RGB native
        frames readable by range (in place, or from a deflated instance's inflated copy); None for
        others, which are decoded whole."""
        pixels = self.pixels
        if factor < 2 or pixels.bits_allocated not in (8, 16) or pixels.planar_configuration \
                or pixels.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
            return None
        if self._in_place():
            read = lambda start, length: self.archive.read(self.stored, start, length)  # noqa: E731
            offset = self.details.pixel_offset
        elif (inflated := self.inflated_frames()) is not None:
            copy, offset = inflated
            read = lambda start, length: (copy.seek(start), copy.read(length))[1]  # noqa: E731
        else:
            return None
        samples, word = pixels.samples_per_pixel, pixels.bits_allocated // 8
        dtype = np.dtype(f"<{'i' if pixels.pixel_representation else 'u'}{word}")
        row_bytes = pixels.columns * samples * word
        band = max(factor, (REDUCE_BAND_BYTES // row_bytes) // factor * factor)
        usable_rows, usable_columns = pixels.rows // factor * factor, pixels.columns // factor * factor
        start, pieces = offset + (number - 1) * pixels.frame_length, []
        for row in range(0, usable_rows, band):
            rows = min(band, usable_rows - row)
            data = read(start + row * row_bytes, rows * row_bytes)
            array = stored_bits(np.frombuffer(data, dtype).reshape(rows, pixels.columns, samples), pixels)
            blocks = array[:, :usable_columns].reshape(rows // factor, factor, usable_columns // factor, factor, samples)
            pieces.append(np.rint(blocks.mean(axis=(1, 3))).astype(dtype))
        reduced = np.concatenate(pieces)
        return reduced[..., 0] if samples == 1 else reduced

    def _decoded(self) -> tuple[bytes, PixelDescription]:
        if self._whole is None:
            with self.archive.readable(self.stored) as (fp, syntax), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(transcode(fp, EXPLICIT_VR_LITTLE_ENDIAN, syntax)))
            description = PixelDescription.from_dataset(ds)
            self._whole = ds.PixelData, PixelDescription(**{**description.__dict__, "number_of_frames": 1})
        return self._whole


REDUCE_BAND_BYTES = 4 << 20   # of a frame's rows read at once when shrinking it


class _Converted:
    """One frame converted to the chosen representation when the encoder reaches it."""

    def __init__(self, frames: FrameReader, number: int, choice: Choice, limits: TranscodeLimits) -> None:
        self.frames, self.number, self.choice, self.limits = frames, number, choice, limits

    def make(self, before_answer: bool) -> bytes:
        with self.limits.slot(before_answer):
            target = self.choice.transfer_syntax
            if (self.frames.stored.transfer_syntax_uid, target) in RECODABLE and self.frames.details.fragments:
                return recode_frame(self.frames.coded(self.number)[0], self.frames.stored.transfer_syntax_uid, target)
            native, description = self.frames.native(self.number)
            if self.choice.native:
                return native
            return encode_frame(native, description, target)[0]

    def __iter__(self) -> Iterator[bytes]:
        yield self.make(before_answer=False)


def body_size(body: Iterable[bytes]) -> int | None:
    """The length of a body ``frame_bodies`` made, where it is known before the body is read:
    spans of a blob or a copy, a frame converted before the answer; not frames converted later."""
    if isinstance(body, (_Spans, _CopySpan)):
        return body.size
    return sum(len(chunk) for chunk in body) if isinstance(body, list) else None


class _CopySpan:
    """A span of a local file (an inflated copy) read in chunks when iterated."""

    def __init__(self, copy: BinaryIO, start: int, length: int) -> None:
        self.copy, self.start, self.length = copy, start, length
        self.size = length

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        self.copy.seek(self.start)
        while left > 0 and (chunk := self.copy.read(min(left, 1 << 20))):
            left -= len(chunk)
            yield chunk


class _Spans:
    """Byte spans of an instance's blob — one native frame, or a frame's fragments — as pieces of
    the answer (storage.blobs.body_pieces) when iterated."""

    def __init__(self, archive: Archive, stored: StoredInstance, spans: Sequence) -> None:
        self.archive, self.stored, self.spans = archive, stored, spans
        self.size = sum(length for _, length in spans)

    def __iter__(self) -> Iterator[BodyPiece]:
        for start, length in self.spans:
            yield from self.archive.body(self.stored, start, length)
