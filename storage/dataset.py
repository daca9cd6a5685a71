"""Reading what the archive needs from one DICOM Part 10 file.

Pure functions over a seekable file object; no storage, no HTTP.
"""
from __future__ import annotations

import re
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import pydicom
import pydicom.filewriter
from pydicom.errors import InvalidDicomError

from .metadata import instance_metadata, with_transfer_syntax
from .status import FailureReason
from .structure import TooComplex, check_structure
from .uids import is_valid_uid

PATIENT_KEYWORDS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "StudyID",
)
SERIES_KEYWORDS = (
    "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
)
INSTANCE_KEYWORDS = ("InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
INTEGER_KEYWORDS = frozenset({*INSTANCE_KEYWORDS, "SeriesNumber"})
INDEXED_TEXT_LENGTH = 400   # the catalog's text columns (storage.schema.Text)


class RejectedInstance(Exception):
    """An instance the archive will not store, with its PS3.4 failure reason."""

    def __init__(self, reason: FailureReason, message: str, sop_class: str | None = None,
                 sop_instance: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class = sop_class
        self.sop_instance = sop_instance


@dataclass(frozen=True)
class PixelLocation:
    """Where an instance's pixel data element sits in its file."""

    tag: int                  # Pixel Data, Float or Double Float Pixel Data
    vr: str
    offset: int | None        # of the value in the file; None when read from a deflated stream
    length: int | None        # of a native value; None when encapsulated (or unknown)
    frames: tuple[tuple[tuple[int, int], ...], ...] | None = None   # encapsulated: each frame's fragments
    fragments: tuple[tuple[int, int], ...] = ()   # encapsulated: every fragment (offset, length), in order


@dataclass(frozen=True)
class InstanceHeader:
    """The identifying and searchable attributes of one instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient: dict = field(default_factory=dict)
    study: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    instance: dict = field(default_factory=dict)
    metadata: bytes = b""      # the DICOM JSON object (storage.metadata)
    pixels: PixelLocation | None = None


_TAGS = {keyword: pydicom.datadict.tag_for_keyword(keyword)
         for keyword in (*PATIENT_KEYWORDS, *STUDY_KEYWORDS, *SERIES_KEYWORDS, *INSTANCE_KEYWORDS)}


def _value(ds: pydicom.Dataset, keyword: str) -> str | int | None:
    tag = _TAGS[keyword]   # by tag, and absent ones without a lookup: a keyword costs pydicom much more
    if tag not in ds._dict:
        return None
    value = ds[tag].value
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return None
    if keyword in INTEGER_KEYWORDS:
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return number if -(1 << 31) <= number < 1 << 31 else None   # beyond IS and the catalog: not indexed
    # Indexed as far as the catalog's columns hold it; NUL, which PostgreSQL text refuses, left out.
    return str(value).replace("\x00", "")[:INDEXED_TEXT_LENGTH] or None


DEFLATED = "1.2.840.10008.1.2.1.99"
DEFER_SIZE = 64 << 10
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
MAX_INFLATION_RATIO = 200        # beyond, deflated data is a bomb, not an image…
MIN_INFLATION_ALLOWANCE = 64 << 20   # …unless it stays this small (a black image inflates 1,000 times)
_SPOOL_MEMORY = 4 << 20   # of an inflated copy kept in memory before it goes to disk


class InflationLimit(Exception):
    """Deflated data that inflates beyond what one instance may take."""


def transfer_syntax(fp: BinaryIO) -> str | None:
    """The Transfer Syntax UID of a Part 10 file's meta information, None when unreadable;
    ``fp`` is left where it was."""
    start = fp.tell()
    head = fp.read(_META_READ)
    fp.seek(start)
    found = _scanned_transfer_syntax(head)
    if found is not None:
        return found
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.filereader.read_preamble(fp, False)
            return str(pydicom.filereader._read_file_meta_info(fp).get("TransferSyntaxUID", "") or "") or None
    except Exception:   # not Part 10: the full read says why
        return None
    finally:
        fp.seek(start)


_META_READ = 132 + 2048   # the preamble, DICM and the file meta information of nearly every file


def _scanned_transfer_syntax(head: bytes) -> str | None:
    """(0002,0010) found by walking a well-formed explicit VR file meta group in ``head`` (a
    tenth of what pydicom's reading of it costs); None for anything else, which pydicom reads."""
    for element, vr, _, start, end in _meta_elements(head)[0]:
        if element == 0x0010:
            if vr != b"UI":
                return None
            try:
                return head[start:end].rstrip(b"\0 ").decode("ascii") or None
            except UnicodeDecodeError:
                return None
    return None


def _meta_elements(head: bytes) -> tuple[list[tuple[int, bytes, int, int, int]], int | None]:
    """The elements of the explicit VR file meta group after the preamble and DICM at the start
    of ``head``, each as (element number, VR, element start, value start, value end), and where
    the group ends (None unless an element of another group is seen after it: the walk stops
    at the end of ``head`` and at anything not well formed)."""
    found: list[tuple[int, bytes, int, int, int]] = []
    if head[128:132] != b"DICM":
        return found, None
    position = 132
    while position + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, position)
        if group != 2:
            return found, position if found else None
        vr = head[position + 4:position + 6]
        if not vr.isalpha() or not vr.isupper():
            return found, None
        if vr in _LONG_VRS:
            if position + 12 > len(head):
                return found, None
            (length,), at = struct.unpack_from("<I", head, position + 8), position + 12
        else:
            (length,), at = struct.unpack_from("<H", head, position + 6), position + 8
        if at + length > len(head):
            return found, None
        found.append((element, vr, position, at, at + length))
        position = at + length
    return found, None


def decoded_prefix(prefix: bytes) -> bytes | None:
    """What comes before Pixel Data in the same file decoded to Explicit VR Little Endian, for
    the start of an encapsulated Part 10 file up to where its first fragment's data begins: its
    data set as it is — an encapsulated syntax encodes the data set in explicit VR little endian
    (PS3.5 A.4), the very bytes the decoded file has where decoding changes no attribute (the
    caller's to know: lossless, one sample per pixel) — after its file meta group naming the new
    syntax. None when the prefix is not laid out so (meta group, explicit VR data set, Pixel Data
    of undefined length as OB or OW, its offset table item, the first fragment's item header)."""
    elements, meta_end = _meta_elements(prefix)
    if meta_end is None or not any(element == 0x0010 for element, *_ in elements):
        return None
    if prefix[meta_end + 4:meta_end + 6] not in _KNOWN_VRS:
        return None
    pixels = max(prefix.rfind(element, meta_end) for element in _ENCAPSULATED_PIXEL_DATA)
    if pixels < 0 or prefix[pixels + 12:pixels + 16] != _ITEM_HEADER or len(prefix) < pixels + 20:
        return None
    (table,) = struct.unpack_from("<I", prefix, pixels + 16)
    if pixels + 20 + table + 8 != len(prefix) or prefix[-8:-4] != _ITEM_HEADER:
        return None
    syntax = EXPLICIT_VR_LITTLE_ENDIAN.encode() + b"\0" * (len(EXPLICIT_VR_LITTLE_ENDIAN) % 2)
    meta = b"".join(struct.pack("<HH2sH", 2, 0x0010, b"UI", len(syntax)) + syntax if element == 0x0010
                    else prefix[start:end]
                    for element, _, start, _, end in elements if element != 0x0000)
    return prefix[:132] + struct.pack("<HH2sHI", 2, 0x0000, b"UL", 4, len(meta)) + meta + prefix[meta_end:pixels]


_ENCAPSULATED_PIXEL_DATA = [b"\xe0\x7f\x10\x00" + vr + b"\x00\x00\xff\xff\xff\xff" for vr in (b"OB", b"OW")]   # OW: GDCM's
_ITEM_HEADER = b"\xfe\xff\x00\xe0"


def inflated_copy(fp: BinaryIO, max_bytes: int) -> BinaryIO:
    """A Deflated Explicit VR Little Endian file (PS3.5 A.5) as the Explicit VR Little Endian file it
    deflates, in a spool (memory up to 4 MiB, then disk): what pydicom would inflate in memory,
    whole and without a bound. InflationLimit beyond ``max_bytes``, or beyond 200 times the
    deflated size (at least 64 MiB). The copy's reads are capped at what it holds (CappedReads);
    the caller closes it."""
    start = fp.tell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preamble = pydicom.filereader.read_preamble(fp, False) or b""
        meta = pydicom.filereader._read_file_meta_info(fp)
    deflated_at = fp.tell()
    compressed = fp.seek(0, 2) - deflated_at
    fp.seek(deflated_at)
    limit = min(max_bytes, max(MIN_INFLATION_ALLOWANCE, MAX_INFLATION_RATIO * compressed))
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    copy = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
    try:
        pydicom.filewriter.write_file_meta_info(_Prefixed(copy, preamble), meta, enforce_standard=True)
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while (chunk := fp.read(1 << 16)) and not inflater.eof:
            while chunk and not inflater.eof:   # at most 1 MiB of output a call: memory holds one such piece
                data = inflater.decompress(chunk, 1 << 20)
                total += len(data)
                if total > limit:
                    raise InflationLimit(f"the deflated data set inflates to more than {limit} bytes")
                copy.write(data)
                chunk = inflater.unconsumed_tail
        copy.seek(0)
        return CappedReads(copy)
    except zlib.error as exc:
        copy.close()
        raise InflationLimit(f"the deflated data set cannot be inflated: {exc}") from None
    except BaseException:
        copy.close()
        raise
    finally:
        fp.seek(start)


class _Prefixed:
    """Writes the 128-byte preamble and DICM before the first write: write_file_meta_info does not."""

    def __init__(self, out: BinaryIO, preamble: bytes) -> None:
        self.out = out
        out.write((preamble + b"\0" * 128)[:128] + b"DICM")

    def write(self, data: bytes) -> int:
        return self.out.write(data)

    def tell(self) -> int:
        return self.out.tell()

    def seek(self, *args) -> int:
        return self.out.seek(*args)


class CappedReads:
    """A seekable file whose reads never ask for more than is left of it. pydicom reads a value
    by its declared length, and a real file's ``read(n)`` allocates the n bytes first, where an
    in-memory one gives what it has: a damaged length of 4 GB in a 1 KB file would cost 4 GB.
    The position is kept here, as pydicom asks for it at every element."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._pos = fp.tell()
        self._size = fp.seek(0, 2)
        fp.seek(self._pos)

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        data = self._fp.read(left if n is None or n < 0 or n > left else n)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self._fp.seek(offset, whence)
        return self._pos

    def __getattr__(self, name: str):  # noqa: ANN204 -- the rest is the file's
        return getattr(self._fp, name)

    def __enter__(self) -> "CappedReads":
        return self

    def __exit__(self, *exc_info) -> None:
        self._fp.close()


def read_header(fp: BinaryIO, max_inflated_bytes: int = 1 << 30, max_items: int | None = None) -> InstanceHeader:
    """Parse the Part 10 header and data set up to Pixel Data.

    Raises RejectedInstance with 0xC000 when the bytes are not a Part 10 file
    with a transfer syntax, or 0xA900 when identifying UIDs are absent or malformed.
    A deflated data set is read from its inflated copy, within ``max_inflated_bytes``
    (0xA700 beyond); the header still names the deflated syntax the file is stored in.
    With ``max_items`` (at ingest), the data set is first counted (storage.structure): more
    sequence items than that, sequences deeper or elements more than its bounds, is 0xA700,
    before pydicom parses any of it.
    """
    fp = CappedReads(fp)
    syntax = transfer_syntax(fp)
    if syntax == DEFLATED:
        try:
            copy = inflated_copy(fp, max_inflated_bytes)
        except InflationLimit as exc:
            raise RejectedInstance(FailureReason.OUT_OF_RESOURCES, str(exc)) from None
        except Exception as exc:
            raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, f"unreadable DICOM data: {reason(exc)}") from None
        with copy:
            header = read_header(copy, max_items=max_items)
        pixels = header.pixels and PixelLocation(header.pixels.tag, header.pixels.vr, None, None)
        return replace(header, transfer_syntax_uid=DEFLATED, pixels=pixels,
                       metadata=with_transfer_syntax(header.metadata, DEFLATED))
    if max_items is not None and syntax is not None:
        _check_structure(fp, syntax, max_items)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Values over 64 KiB (documents, private blobs) are not read: metadata names them by URI.
            ds = pydicom.dcmread(fp, stop_before_pixels=True, defer_size=DEFER_SIZE)
            header = _header(ds)
            pixels = _pixel_element(fp, ds)
            metadata = instance_metadata(ds, header.study_uid, header.series_uid, header.sop_instance_uid,
                                         (pixels.tag, pixels.vr) if pixels else None, header.transfer_syntax_uid)
            return replace(header, metadata=metadata, pixels=pixels)
    except RejectedInstance:
        raise
    except InvalidDicomError:
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, "not a DICOM Part 10 file: no 'DICM' prefix after "
                               "the 128-byte preamble, or no File Meta Information") from None
    except Exception as exc:  # pydicom raises many types on damaged input
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, f"unreadable DICOM data: {reason(exc)}") from None


def _check_structure(fp: CappedReads, syntax: str, max_items: int) -> None:
    """0xA700 for a data set beyond the bounds of storage.structure, counted from where its file
    meta information ends (found as transfer_syntax finds it; pydicom's reading where that fails)."""
    start = fp.tell()
    head = fp.read(_META_READ)
    _, meta_end = _meta_elements(head)
    try:
        if meta_end is None:
            fp.seek(start)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pydicom.filereader.read_preamble(fp, False)
                    pydicom.filereader._read_file_meta_info(fp)
            except Exception:   # noqa: BLE001 - no file meta information pydicom finds: its reading, next, says why
                return
            meta_end = fp.tell() - start
        fp.seek(start + meta_end)
        check_structure(fp, syntax, max_items=max_items)
    except TooComplex as exc:
        raise RejectedInstance(FailureReason.OUT_OF_RESOURCES, f"{exc}: more than one instance may cost to "
                               "store (DICOMWEB_MAX_SEQUENCE_ITEMS, storage.structure)") from None
    finally:
        fp.seek(start)


def read_until_pixels(fp: BinaryIO) -> tuple[pydicom.Dataset, PixelLocation | None]:
    """The data set of a Part 10 file (not deflated) up to Pixel Data, and where Pixel Data is."""
    fp = CappedReads(fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        return ds, _pixel_element(fp, ds)


def reason(exc: Exception) -> str:
    """A library's error as a reason for a peer: one line, without advice meant for programmers
    ("Use force=True…", settings to change, documentation links)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    kept = [s for s in re.split(r"(?<=[.!?])\s+", text)
            if not re.search(r"force=True|config\.|settings\.|https?://|Please see", s)]
    return " ".join(kept)[:300] or type(exc).__name__


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_KNOWN_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                         b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


def _pixel_element(fp: BinaryIO, ds: pydicom.Dataset) -> PixelLocation | None:
    """Where the pixel data element after the header is, refusing a file whose
    value runs past its end (a truncated upload).

    ``stop_before_pixels`` leaves ``fp`` at that element; its header gives the
    value length, or, when encapsulated, item headers to seek over.
    """
    bits = int(ds.get("BitsAllocated", 16) or 16)
    implicit, little = ds.original_encoding
    order = "<" if little else ">"
    start = fp.tell()
    end = fp.seek(0, 2)
    fp.seek(start)
    if start >= end:
        return None
    head = fp.read(8)
    if len(head) < 8:
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, "the file is truncated inside an element header")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if implicit or not head[4:6].isupper():
        # Some writers encode elements in implicit VR under an explicit syntax;
        # pydicom reads those too, so we do the same here.
        (length,) = struct.unpack(order + "I", head[4:8])
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(tag, "OB" if length == _UNDEFINED or bits <= 8 else "OW")
    elif head[4:6] in _LONG_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, "the file is truncated inside an element header")
        (length,) = struct.unpack(order + "I", extra)
    else:
        (length,) = struct.unpack(order + "H", head[6:8])
    if not (implicit or not head[4:6].isupper()):
        vr = head[4:6].decode("ascii")
    position = fp.tell()
    if length != _UNDEFINED:
        if position + length > end:
            raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND,
                                   f"the file is truncated: Pixel Data needs {length} bytes, {end - position} remain")
        return PixelLocation(tag, vr, position, length)
    items: list[tuple[int, int]] = []   # (offset of the item's value in the file, its length)
    while True:  # encapsulated fragments (PS3.5 A.4): the Basic Offset Table first, then fragments
        item = fp.read(8)
        if len(item) < 8:
            raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND,
                                   "the file is truncated: encapsulated Pixel Data has no sequence delimiter")
        group, element, size = struct.unpack(order + "HHI", item)
        item_tag = (group << 16) | element
        if item_tag == _SEQUENCE_DELIMITER:
            break
        if item_tag != _ITEM or size == _UNDEFINED or fp.tell() + size > end:
            raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND,
                                   "the file is truncated or damaged inside encapsulated Pixel Data")
        items.append((fp.tell(), size))
        fp.seek(size, 1)
    frames = None
    if items:
        bot_offset, bot_size = items[0]
        fp.seek(bot_offset)
        table = list(struct.unpack(f"{order}{bot_size // 4}I", fp.read(bot_size - bot_size % 4)))
        extended = ds.get("ExtendedOffsetTable")
        if not table and isinstance(extended, bytes) and len(extended) % 8 == 0:
            # PS3.5 A.4: with an Extended Offset Table the Basic one is empty; same origin, 64-bit.
            table = list(struct.unpack(f"<{len(extended) // 8}Q", extended))
        count = int(ds.get("NumberOfFrames", 1) or 1)
        frames = split_frames(table, items[1:], count)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "") if hasattr(ds, "file_meta") else "")
        if frames is None and not table and syntax in _CODESTREAM_SYNTAXES:
            frames = frames_by_end_marker(fp, items[1:], count)
    return PixelLocation(tag, vr, position, None, frames, tuple(items[1:]))


# Syntaxes whose frames are codestreams ending in an end marker (EOI of JPEG and JPEG-LS, EOC of
# JPEG 2000 and HTJ2K: both FFD9), so that fragments without an offset table can be told apart.
_CODESTREAM_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203"})


def frames_by_end_marker(fp: BinaryIO, fragments: list[tuple[int, int]],
                         number_of_frames: int) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Fragments without an offset table grouped into frames where each frame's codestream ends
    in its last fragment with the FFD9 end marker (a pad byte after it allowed), as PS3.5 A.4
    lets a writer split a frame; None unless exactly ``number_of_frames`` frames come out. Three
    bytes are read a fragment, none of the codestreams."""
    frames: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    for offset, length in fragments:
        current.append((offset, length))
        fp.seek(offset + max(0, length - 3))
        tail = fp.read(min(3, length))
        if tail.endswith(b"\xff\xd9") or tail.endswith(b"\xff\xd9\x00"):
            frames.append(tuple(current))
            current = []
            if len(frames) > number_of_frames:
                return None
    if current or len(frames) != number_of_frames:
        return None
    return tuple(frames)


def split_frames(table: list[int], fragments: list[tuple[int, int]],
                 number_of_frames: int) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """Group encapsulated fragments (value offset in the file, length) into frames.

    With a Basic (or Extended) Offset Table, its entries are offsets of each frame's first
    item from the first fragment's item header (PS3.5 A.4). Without one, a single frame is every
    fragment, and as many fragments as frames is one each. Otherwise, None: the
    fragments cannot be split without decoding (PS3.5 allows it; few writers do it).
    """
    if not fragments:
        return None
    first_item = fragments[0][0] - 8
    starts = [offset - 8 - first_item for offset, _ in fragments]
    if table:
        if len(table) != number_of_frames or table[0] != 0 or any(a >= b for a, b in zip(table, table[1:])):
            return None
        # One pass: fragments and frame starts are both in file order (linear in their number).
        frames: list[tuple[tuple[int, int], ...]] = []
        current: list[tuple[int, int]] = []
        following = 1   # the index of the next frame's start in the table
        for fragment, start in zip(fragments, starts):
            while following < len(table) and start >= table[following]:
                if not current:
                    return None   # a frame without a fragment of its own
                frames.append(tuple(current))
                current, following = [], following + 1
            current.append(fragment)
        frames.append(tuple(current))
        return tuple(frames) if len(frames) == number_of_frames and all(frames) else None
    if number_of_frames == 1:
        return (tuple(fragments),)
    if len(fragments) == number_of_frames:
        return tuple((f,) for f in fragments)
    return None


def _header(ds: pydicom.Dataset) -> InstanceHeader:
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "") or str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    ids = {"sop_class": sop_class or None, "sop_instance": sop_instance or None}
    if not is_valid_uid(ts):
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND,
                               "file meta information has no valid Transfer Syntax UID (0002,0010)", **ids)
    checks = (
        ("SOP Class UID (0008,0016)", sop_class),
        ("SOP Instance UID (0008,0018)", sop_instance),
        ("Study Instance UID (0020,000D)", str(ds.get("StudyInstanceUID", "") or "")),
        ("Series Instance UID (0020,000E)", str(ds.get("SeriesInstanceUID", "") or "")),
    )
    for name, value in checks:
        if not value:
            raise RejectedInstance(FailureReason.DATASET_MISMATCH, f"{name} is missing", **ids)
        if not is_valid_uid(value):
            raise RejectedInstance(FailureReason.DATASET_MISMATCH, f"{name} {value[:80]!r} is not a valid UID", **ids)

    def pick(keywords: tuple[str, ...]) -> dict:
        return {k: v for k in keywords if (v := _value(ds, k)) is not None}

    return InstanceHeader(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=ts,
        patient=pick(PATIENT_KEYWORDS),
        study=pick(STUDY_KEYWORDS),
        series=pick(SERIES_KEYWORDS),
        instance=pick(INSTANCE_KEYWORDS),
    )
