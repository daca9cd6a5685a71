"""How much a Part 10 data set holds, counted before anything parses it.

pydicom parses nested sequences eagerly (undefined length) or when first touched (defined
length), some 100 µs an item, and the metadata made at ingest walks every item: a structured
report of 100,000 content items took 15 s and 250 MiB to store. ``check_structure`` walks the
element headers only, skipping every value, from the start of the data set to the top-level
Pixel Data, and counts the elements, the sequence items and how deep sequences nest, stopping
as soon as a bound is passed. It reads elements as pydicom does (explicit VR, or implicit with
the dictionary's VR; a sequence of undefined length, or of defined length, or a UN that holds
one), so that what it lets through is what pydicom will find.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.datadict import DicomDictionary

MAX_SEQUENCE_ITEMS = 25_000     # items of every sequence of one data set (a 5,000-item SR has ~14,000)
MAX_SEQUENCE_DEPTH = 64         # sequences within sequences (SR content trees nest a dozen levels)
MAX_ELEMENTS = 250_000          # elements at every depth

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})


class TooComplex(Exception):
    """A data set beyond a bound of this module: the sender's to split or simplify."""


@dataclass
class Counted:
    elements: int = 0
    items: int = 0
    depth: int = 0


def check_structure(fp: BinaryIO, transfer_syntax: str, max_items: int = MAX_SEQUENCE_ITEMS,
                    max_depth: int = MAX_SEQUENCE_DEPTH, max_elements: int = MAX_ELEMENTS) -> Counted:
    """Count the data set that starts at ``fp``'s position (after the file meta information), up
    to the top-level pixel data or the end; TooComplex, naming the bound, as soon as one is
    passed. A structure that does not read (truncated, a length past the end) ends the walk
    quietly: pydicom, reading next, says what is wrong with it. ``fp`` is left where it was."""
    start = fp.tell()
    end = fp.seek(0, 2)
    walker = _Walker(fp, start, end, transfer_syntax, max_items, max_depth, max_elements)
    try:
        walker.dataset(end, depth=0, top=True)
    except _Unreadable:
        pass
    finally:
        fp.seek(start)
    return walker.counted


class _Unreadable(Exception):
    pass


class _Walker:
    """Reads ``fp`` through a window of CHUNK bytes: a header costs a slice, not a call of the
    file's (a CT slice's data set is walked in one read)."""

    CHUNK = 64 << 10

    def __init__(self, fp: BinaryIO, start: int, end: int, syntax: str, max_items: int, max_depth: int,
                 max_elements: int) -> None:
        self.fp, self.position, self.end = fp, start, end
        self.window, self.window_start = b"", start
        self.implicit = syntax == IMPLICIT_VR_LITTLE_ENDIAN
        self.order = ">" if syntax == EXPLICIT_VR_BIG_ENDIAN else "<"
        self.max_items, self.max_depth, self.max_elements = max_items, max_depth, max_elements
        self.counted = Counted()

    def tell(self) -> int:
        return self.position

    def _peek(self, count: int) -> bytes:
        offset = self.position - self.window_start
        if offset < 0 or offset + count > len(self.window):
            self.fp.seek(self.position)
            self.window, self.window_start, offset = self.fp.read(max(count, self.CHUNK)), self.position, 0
        return self.window[offset:offset + count]

    def _read(self, count: int) -> bytes:
        data = self._peek(count)
        if len(data) < count:
            raise _Unreadable
        self.position += count
        return data

    def _skip(self, length: int) -> None:
        if self.position + length > self.end:
            raise _Unreadable
        self.position += length

    def _tag(self, data: bytes) -> int:
        group, element = struct.unpack(self.order + "HH", data[:4])
        return (group << 16) | element

    def dataset(self, until: int, depth: int, top: bool = False, implicit: bool | None = None) -> None:
        """Elements up to the offset ``until``, or an item delimiter when ``until`` is None."""
        implicit = self.implicit if implicit is None else implicit
        order = "<" if implicit else self.order
        while until is None or self.position < until:
            head = self._read(8)   # the end of the file raises _Unreadable: nothing more for pydicom either
            tag = (struct.unpack(order + "H", head[:2])[0] << 16) | struct.unpack(order + "H", head[2:4])[0]
            if top and tag in _PIXEL_TAGS:
                return
            if tag == _ITEM_END:
                return
            self.counted.elements += 1
            if self.counted.elements > self.max_elements:
                raise TooComplex(f"the data set holds more than {self.max_elements} elements")
            vr = head[4:6]
            if implicit or not (vr.isalpha() and vr.isupper()):   # implicit VR (some writers mix it in)
                vr, (length,) = None, struct.unpack(order + "I", head[4:8])
            elif vr in _LONG_VRS:
                (length,) = struct.unpack(order + "I", self._read(4))
            else:
                (length,) = struct.unpack(order + "H", head[6:8])
            self._value(tag, vr, length, depth, implicit)

    def _value(self, tag: int, vr: bytes | None, length: int, depth: int, implicit: bool) -> None:
        unnamed = vr is None or vr == b"UN"   # the VR is the dictionary's, or pydicom's guess
        if vr == b"SQ" or (unnamed and _dictionary_vr(tag) == "SQ"):
            self.sequence(length, depth + 1, implicit or vr == b"UN")   # a UN holds implicit VR (PS3.5 6.2.2)
        elif unnamed and length and self._next_is_item():
            # pydicom reads a value it cannot name as a sequence when it holds items (an undefined
            # length UN; a private sequence its private dictionary knows): so is it counted here
            self.sequence(length, depth + 1, implicit or vr == b"UN")
        elif length == _UNDEFINED:
            self._to_sequence_end()
        else:
            self._skip(length)

    def sequence(self, length: int, depth: int, implicit: bool) -> None:
        """Items up to ``length`` (clipped to the file, as pydicom reads what is there) or to the
        sequence delimiter; whatever tag an item has, as pydicom takes it."""
        if depth > self.max_depth:
            raise TooComplex(f"sequences are nested more than {self.max_depth} levels deep")
        until = None if length == _UNDEFINED else min(self.position + length, self.end)
        order = "<" if implicit else self.order
        while until is None or self.position < until:
            head = self._read(8)
            tag = (struct.unpack(order + "H", head[:2])[0] << 16) | struct.unpack(order + "H", head[2:4])[0]
            (item_length,) = struct.unpack(order + "I", head[4:8])
            if tag == _SEQUENCE_END:
                return
            self.counted.items += 1
            if self.counted.items > self.max_items:
                raise TooComplex(f"the data set's sequences hold more than {self.max_items} items")
            self.counted.depth = max(self.counted.depth, depth)
            if item_length == _UNDEFINED:
                self.dataset(None, depth, implicit=implicit)
            else:
                item_end = min(self.position + item_length, self.end)
                self.dataset(item_end, depth, implicit=implicit)
                self.position = item_end

    def _next_is_item(self) -> bool:
        peek = self._peek(4)
        return len(peek) == 4 and self._tag(peek) == _ITEM

    def _to_sequence_end(self) -> None:
        """Past an undefined length value that is no sequence (pydicom looks for the delimiter)."""
        delimiter = struct.pack(self.order + "HH", 0xFFFE, 0xE0DD)
        self.fp.seek(self.position)
        carried, read_to = b"", self.position
        while chunk := self.fp.read(1 << 16):
            read_to += len(chunk)
            found = (carried + chunk).find(delimiter)
            if found >= 0:
                self._skip(read_to - len(chunk) - len(carried) + found + 8 - self.position)
                return
            carried = chunk[-3:]
        raise _Unreadable


def _dictionary_vr(tag: int) -> str | None:
    entry = DicomDictionary.get(tag)   # repeating groups (overlays, curves) hold no sequence
    return entry[0] if entry else None
