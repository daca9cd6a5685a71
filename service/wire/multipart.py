"""multipart/related (RFC 2387) both ways, without I/O.

``MultipartDecoder`` is a state machine: ``feed`` it bytes as they arrive and
iterate ``events()``; it keeps back at most one delimiter's length of part data
plus one header block beyond what it was fed last; ``spooled_parts`` drives it over a body
arriving in chunks and writes each part to a file of the caller's. ``encode_parts`` is a
generator that writes parts from iterables of byte chunks, so responses stream without
joining bodies.
"""
from __future__ import annotations

import hashlib
import secrets
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

MAX_HEADER_BYTES = 16 * 1024


class MultipartError(Exception):
    """The body is not well-formed multipart."""


class PartLimit(MultipartError):
    """The body has more parts than the decoder was allowed to read."""


class PartTooLarge(MultipartError):
    """A part is larger than its reader allows."""


@dataclass(frozen=True)
class PartStart:
    headers: dict[str, str]    # names lower-cased


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


@dataclass(frozen=True)
class Finished:
    pass


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE, _OVER = range(6)


class MultipartDecoder:
    """Feed it bytes, iterate its events. The buffer is read from a position that moves forward
    (and is compacted once that position passes half of it), so each byte is looked at a
    bounded number of times however many parts there are; ``max_parts`` bounds those too."""

    def __init__(self, boundary: str | bytes, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_parts: int | None = None) -> None:
        if isinstance(boundary, str):
            try:
                boundary = boundary.encode("latin-1")
            except UnicodeEncodeError:
                raise MultipartError("multipart boundary must be ASCII") from None
        if not boundary or len(boundary) > 200:
            raise MultipartError("multipart boundary must be 1 to 200 characters")
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray()
        self._pos = 0
        self._state = _PREAMBLE
        self._ended = False
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._parts = 0
        self._events: deque[object] = deque()

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` marks the end of the body."""
        if self._ended:
            raise MultipartError("data after the end of the body")
        if data:
            self._buffer += data
        else:
            self._ended = True
        self._run()
        if self._pos > len(self._buffer) // 2:   # what is left is small: keep only it
            del self._buffer[:self._pos]
            self._pos = 0

    @property
    def held(self) -> int:
        """Bytes the decoder keeps in memory: bounded, however large a part is."""
        return len(self._buffer)

    def events(self) -> Iterator[object]:
        """Drain the events produced so far; PartLimit once the parts before the limit are drained."""
        while self._events:
            event = self._events.popleft()
            if isinstance(event, PartLimit):
                raise event
            yield event

    def _start_part(self, headers: dict[str, str]) -> None:
        self._parts += 1
        if self._max_parts is not None and self._parts > self._max_parts:
            # Not raised here: the parts before it, decoded from the same feed, come first.
            self._events.append(PartLimit(f"the body has more than {self._max_parts} parts"))
            self._state = _OVER
            return
        self._events.append(PartStart(headers))
        self._state = _BODY

    def _run(self) -> None:
        buf, delimiter = self._buffer, self._delimiter
        while True:
            pos = self._pos
            if self._state == _OVER:
                self._pos = len(buf)
                return
            if self._state == _PREAMBLE:
                # The first delimiter may open the body without a preceding CRLF.
                if buf.startswith(self._dash_boundary, pos):
                    self._pos = pos + len(self._dash_boundary)
                    self._state = _AFTER_DELIMITER
                    continue
                index = buf.find(delimiter, pos)
                if index >= 0:
                    self._pos = index + len(delimiter)
                    self._state = _AFTER_DELIMITER
                    continue
                self._pos = max(pos, len(buf) - (len(delimiter) - 1))
                if self._ended:
                    raise MultipartError("no multipart boundary found in the body")
                return
            if self._state == _AFTER_DELIMITER:
                if len(buf) - pos < 2:
                    if self._ended:
                        raise MultipartError("body ends inside a boundary line")
                    return
                if buf[pos:pos + 2] == b"--":
                    self._pos = len(buf)
                    self._state = _EPILOGUE
                    self._events.append(Finished())
                    continue
                end = buf.find(b"\r\n", pos, pos + 1026)
                if end < 0:
                    if len(buf) - pos > 1024 or self._ended:
                        raise MultipartError("malformed boundary line")
                    return
                if buf[pos:end].strip(b" \t"):
                    raise MultipartError("unexpected characters after a boundary")
                self._pos = end + 2
                self._state = _HEADERS
                continue
            if self._state == _HEADERS:
                if buf.startswith(b"\r\n", pos):
                    self._pos = pos + 2
                    self._start_part({})
                    continue
                end = buf.find(b"\r\n\r\n", pos, pos + self._max_header_bytes + 4)
                if end < 0:
                    if len(buf) - pos > self._max_header_bytes:
                        raise MultipartError("part headers are too large")
                    if self._ended:
                        raise MultipartError("body ends inside part headers")
                    return
                headers = _parse_headers(bytes(buf[pos:end]))
                self._pos = end + 4
                self._start_part(headers)
                continue
            if self._state == _BODY:
                index = buf.find(delimiter, pos)
                if index >= 0:
                    if index > pos:
                        self._events.append(PartData(bytes(buf[pos:index])))
                    self._pos = index + len(delimiter)
                    self._events.append(PartEnd())
                    self._state = _AFTER_DELIMITER
                    continue
                # Keep back what could be the start of a delimiter split across feeds.
                safe = len(buf) - (len(delimiter) - 1)
                if safe > pos:
                    self._events.append(PartData(bytes(buf[pos:safe])))
                    self._pos = safe
                if self._ended:
                    raise MultipartError("body ends inside a part (no closing boundary)")
                return
            # Epilogue: ignored.
            self._pos = len(buf)
            return


@dataclass
class SpooledPart:
    headers: dict[str, str]    # names lower-cased
    file: BinaryIO | None      # at its start; None: the part was refused, its data skipped
    sha256: str | None = None  # hex digest of its data, when asked for


def spooled_parts(chunks: Iterable[bytes], decoder: MultipartDecoder,
                  file_for: Callable[[dict[str, str]], BinaryIO | None], digest: bool = False,
                  max_part_bytes: int | None = None) -> Iterator[SpooledPart]:
    """Each part of the body arriving in ``chunks``, written as it comes to the file that
    ``file_for(its headers)`` gives (None refuses the part: it is yielded at once, without
    data). The caller owns and closes each file yielded; one left unfinished by an error or
    by the caller's stopping is closed here. MultipartError when the body ends before its
    closing boundary; PartTooLarge beyond ``max_part_bytes``; PartLimit from the decoder."""
    part = hasher = None
    written = 0
    chunks = iter(chunks)
    try:
        while True:
            chunk = next(chunks, b"")
            decoder.feed(chunk)
            for event in decoder.events():
                if isinstance(event, PartStart):
                    part, written = SpooledPart(event.headers, file_for(event.headers)), 0
                    hasher = hashlib.sha256() if digest and part.file is not None else None
                    if part.file is None:
                        yield part
                        part = None
                elif isinstance(event, PartData) and part is not None:
                    written += len(event.data)
                    if max_part_bytes is not None and written > max_part_bytes:
                        raise PartTooLarge(f"a part is larger than {max_part_bytes} bytes")
                    part.file.write(event.data)
                    if hasher is not None:
                        hasher.update(event.data)
                elif isinstance(event, PartEnd) and part is not None:
                    part.file.seek(0)
                    part.sha256 = hasher.hexdigest() if hasher is not None else None
                    finished, part = part, None
                    yield finished
                elif isinstance(event, Finished):
                    return
            if not chunk:
                raise MultipartError("body ends before the closing boundary")
    finally:
        if part is not None and part.file is not None:
            part.file.close()


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and headers:   # obsolete line folding
            last = next(reversed(headers))
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def new_boundary() -> str:
    return "dicomweb-" + secrets.token_hex(16)


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: Iterable[bytes]      # or pieces a server hands over unread (storage.blobs.FileRegion)
    size: int | None = None    # the body's length, where it is known before it is made


def encode_parts(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """Yield a multipart body: each part's headers, then its body chunks as given."""
    opening = f"--{boundary}\r\n".encode("latin-1")
    between = f"\r\n--{boundary}\r\n".encode("latin-1")
    separator = opening
    for part in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in part.headers.items())
        yield separator + head.encode("latin-1") + b"\r\n"
        yield from part.body
        separator = between
    if separator is opening:   # RFC 2046 wants one part at least; an empty body still closes cleanly
        yield opening[:-2] + b"--\r\n"
    else:
        yield f"\r\n--{boundary}--\r\n".encode("latin-1")


def related(parts: Iterable[Part], media_type: str) -> tuple[Iterator[bytes], str]:
    """A ``multipart/related`` body of these parts, and its Content-Type (a fresh boundary)."""
    boundary = new_boundary()
    return encode_parts(parts, boundary), related_type(media_type, boundary)


def related_type(media_type: str, boundary: str) -> str:
    return f'multipart/related; type="{media_type}"; boundary={boundary}'


def encoded_length(parts: Sequence[Part], boundary: str) -> int | None:
    """The length of what ``encode_parts`` writes for ``parts`` (a Content-Length), or None
    when the size of a part is not known."""
    if any(part.size is None for part in parts):
        return None
    length = len(f"\r\n--{boundary}--\r\n") if parts else len(f"--{boundary}--\r\n")
    for i, part in enumerate(parts):
        head = "".join(f"{name}: {value}\r\n" for name, value in part.headers.items())
        lead = f"--{boundary}\r\n" if i == 0 else f"\r\n--{boundary}\r\n"
        length += len(lead.encode("latin-1")) + len(head.encode("latin-1")) + 2 + part.size
    return length
