"""What a compressed image stream is, read from its own header: for storing bulk data parts
(STOW-RS with metadata, PS3.18 §10.5) as encapsulated Pixel Data.

``describe_stream`` gives the transfer syntax, the frames (one codestream each) and what
the header says of the image (rows, columns, samples, bits, photometric interpretation),
for the JPEG processes (SOF markers), JPEG-LS (SOF55), JPEG 2000 and HTJ2K (SIZ and COD, in a
raw codestream or a JP2 file) and JPEG XL (its SizeHeader, in a bare codestream or a
container: rows and columns only). RLE and video carry no such header: their description
must come from the metadata.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from .syntaxes import HTJ2K, HTJ2K_LOSSLESS, JPEG_BASELINE, JPEG_EXTENDED, JPEG_XL_LOSSLESS, RLE_LOSSLESS

# The media types a bulk data part may have for Pixel Data, and the syntax each means by default.
PIXEL_MEDIA_TYPES = {
    "image/jpeg": JPEG_BASELINE, "image/jls": "1.2.840.10008.1.2.4.80", "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90", "image/jpx": "1.2.840.10008.1.2.4.92", "image/jphc": HTJ2K_LOSSLESS,
    "image/jxl": JPEG_XL_LOSSLESS,
    "image/dicom-rle": RLE_LOSSLESS, "image/x-dicom-rle": RLE_LOSSLESS,
    "video/mpeg": "1.2.840.10008.1.2.4.100", "video/mp4": "1.2.840.10008.1.2.4.102",
}


class StreamError(Exception):
    """A stream that does not read as its media type, or whose header describes an image
    DICOM cannot hold: the sender's to mend."""


@dataclass
class StreamImage:
    transfer_syntax: str
    frames: list[bytes]
    rows: int | None = None
    columns: int | None = None
    samples_per_pixel: int | None = None
    bits_stored: int | None = None
    photometric_interpretation: str | None = None

    @property
    def bits_allocated(self) -> int | None:
        return None if self.bits_stored is None else (8 if self.bits_stored <= 8 else 16)


def describe_stream(media_type: str, data: bytes, transfer_syntax: str | None = None) -> StreamImage:
    """Raises StreamError when the stream does not read as its media type, or its header
    describes an image DICOM cannot hold (PS3.3 C.7.6.3: rows and columns 1 to 65535,
    1 to 4 samples, 1 to 16 bits): a header is the peer's word, checked before use."""
    if media_type not in PIXEL_MEDIA_TYPES:
        raise StreamError(f"{media_type} is not a pixel data media type")
    try:
        if media_type == "image/jpeg":
            image = _jpeg(data, transfer_syntax)
        elif media_type in ("image/jls", "image/x-jls"):
            image = _jpeg_ls(data, transfer_syntax)
        elif media_type in ("image/jp2", "image/jpx", "image/jphc"):
            image = _jpeg_2000(data, transfer_syntax or PIXEL_MEDIA_TYPES[media_type])
        elif media_type == "image/jxl":
            image = _jpeg_xl(data, transfer_syntax or JPEG_XL_LOSSLESS)
        else:
            return StreamImage(transfer_syntax or PIXEL_MEDIA_TYPES[media_type], [data])
    except (struct.error, IndexError):
        raise StreamError("the stream's header is truncated") from None
    checks = (("rows", image.rows, 1, 0xFFFF), ("columns", image.columns, 1, 0xFFFF),
              ("samples per pixel", image.samples_per_pixel, 1, 4), ("bits per sample", image.bits_stored, 1, 16))
    for name, value, low, high in checks:
        if value is not None and not low <= value <= high:
            raise StreamError(f"the stream's header declares {value} {name}, outside {low}..{high}")
    return image


def _markers(data: bytes):
    """(marker, segment payload) of a JPEG-family stream, up to its first scan."""
    if data[:2] != b"\xff\xd8":
        raise StreamError("the stream does not start with a JPEG SOI marker")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise StreamError(f"JPEG marker expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if length < 2 or position + 2 + length > len(data):
            raise StreamError(f"the JPEG marker segment at byte {position} is truncated")
        yield marker, data[position + 4:position + 2 + length]
        if marker == 0xDA:   # start of scan: the header ends
            return
        position += 2 + length
    raise StreamError("the JPEG stream ends inside its header")


def _split_jpeg_frames(data: bytes) -> list[bytes]:
    """Several JPEG codestreams one after the other (a multi-frame part) as frames."""
    frames, start = [], 0
    while True:
        end = data.find(b"\xff\xd9\xff\xd8", start)
        if end < 0:
            frames.append(data[start:])
            return frames
        frames.append(data[start:end + 2])
        start = end + 2


def _jpeg(data: bytes, syntax: str | None) -> StreamImage:
    frames = _split_jpeg_frames(data)
    adobe_transform = None
    for marker, payload in _markers(frames[0]):
        if marker == 0xEE and payload[:5] == b"Adobe" and len(payload) >= 12:
            adobe_transform = payload[11]
        if marker in (0xC0, 0xC1, 0xC3):
            precision, rows, columns, components = struct.unpack(">BHHB", payload[:6])
            lossless = marker == 0xC3
            if syntax is None:
                syntax = "1.2.840.10008.1.2.4.70" if lossless else JPEG_BASELINE if marker == 0xC0 else JPEG_EXTENDED
            if components == 1:
                photometric = "MONOCHROME2"
            elif lossless or adobe_transform == 0:
                photometric = "RGB"
            else:
                photometric = "YBR_FULL_422"
            return StreamImage(syntax, frames, rows, columns, components, precision, photometric)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise StreamError(f"JPEG process SOF{marker - 0xC0} has no DICOM transfer syntax here")
    raise StreamError("the JPEG stream has no frame header")


def _jpeg_ls(data: bytes, syntax: str | None) -> StreamImage:
    frame = None
    for marker, payload in _markers(data):
        if marker == 0xF7:
            frame = struct.unpack(">BHHB", payload[:6])
        elif marker == 0xDA and frame is not None:
            near = payload[1 + 2 * payload[0]] if len(payload) > 1 + 2 * payload[0] else 0
            precision, rows, columns, components = frame
            syntax = syntax or ("1.2.840.10008.1.2.4.81" if near else "1.2.840.10008.1.2.4.80")
            return StreamImage(syntax, [data], rows, columns, components, precision,
                               "MONOCHROME2" if components == 1 else "RGB")
    raise StreamError("the JPEG-LS stream has no frame header (SOF55)")


def _jpeg_2000(data: bytes, syntax: str) -> StreamImage:
    if data[4:8] == b"jP  ":   # a JP2 file: DICOM keeps its codestream (the jp2c box)
        data = _jp2_codestream(data)
    if data[:4] != b"\xff\x4f\xff\x51":
        raise StreamError("the stream is not a JPEG 2000 codestream (no SOC and SIZ markers)")
    (length,) = struct.unpack(">H", data[4:6])
    siz = data[6:4 + length]
    if len(siz) < 37 or length > len(data) - 4:
        raise StreamError("the JPEG 2000 SIZ marker segment is truncated")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", siz[2:18])
    (components,) = struct.unpack(">H", siz[34:36])
    precision = (siz[36] & 0x7F) + 1
    position, mct, reversible = 4 + length, 0, True
    while position + 4 <= len(data):
        marker, size = struct.unpack(">HH", data[position:position + 4])
        if marker == 0xFF52:   # COD: multiple component transform and wavelet of the main header
            if position + 14 > len(data):
                raise StreamError("the JPEG 2000 COD marker segment is truncated")
            mct, reversible = data[position + 8], data[position + 13] == 1
            break
        if marker == 0xFF90:   # first tile: the main header is over
            break
        position += 2 + size
    if syntax == "1.2.840.10008.1.2.4.90" and not reversible:
        syntax = "1.2.840.10008.1.2.4.91"
    if syntax == HTJ2K_LOSSLESS and not reversible:
        syntax = HTJ2K
    photometric = "MONOCHROME2" if components == 1 else ("YBR_RCT" if reversible else "YBR_ICT") if mct else "RGB"
    if xosiz >= xsiz or yosiz >= ysiz:
        raise StreamError(f"the JPEG 2000 image area is empty or negative ({xsiz}-{xosiz} by {ysiz}-{yosiz})")
    return StreamImage(syntax, [data], ysiz - yosiz, xsiz - xosiz, components, precision, photometric)


def _jp2_codestream(data: bytes) -> bytes:
    for kind, start, end in boxes(_in_memory(data), 0, len(data)):
        if kind == b"jp2c":
            return data[start:end]
    raise StreamError("the JP2 file has no codestream box")


def boxes(read: Callable[[int, int], bytes], position: int, end: int, limit: int = 1024) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each ISO base media box (JP2, JPEG XL's container, MP4) from
    ``position`` to ``end``, their headers got by ``read(position, count)``, so that a stream in a
    blob is walked without being read: a size of 1 means a 64-bit size follows, 0 the rest. At
    most ``limit`` boxes; a damaged size (2–7, or a 64-bit size cut off) ends the walk after its box."""
    for _ in range(limit):
        if position + 8 > end:
            return
        header = read(position, 16)
        size, kind = struct.unpack(">I4s", header[:8])
        head = 8
        if size == 1:
            if len(header) < 16:
                return
            (size,) = struct.unpack(">Q", header[8:16])
            head = 16
        box_end = position + size if size else end
        yield kind, position + head, box_end
        if size < head:   # 0 (the last box) or damaged: no box follows
            return
        position = box_end


def _in_memory(data: bytes) -> Callable[[int, int], bytes]:
    return lambda position, count: data[position:position + count]


_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# FixedAspectRatios of ISO/IEC 18181-1 SizeHeader: columns = rows × numerator / denominator.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def _jpeg_xl(data: bytes, syntax: str) -> StreamImage:
    """Rows and columns from a JPEG XL codestream's SizeHeader (ISO/IEC 18181-1 §D.2), bare or
    in the container's first jxlc/jxlp box; its colour and bit depth lie in fields this does not read."""
    codestream = _jxl_codestream(data) if data.startswith(_JXL_CONTAINER) else data
    if codestream[:2] != b"\xff\x0a":
        raise StreamError("the stream is not a JPEG XL codestream (no FF0A signature)")
    bits = int.from_bytes(codestream[2:20], "little")   # the SizeHeader lies within its first 18 bytes
    position = 0

    def read(count: int) -> int:
        nonlocal position
        value = (bits >> position) & ((1 << count) - 1)
        position += count
        return value

    def size() -> int:   # U32(Bits(9)+1, Bits(13)+1, Bits(18)+1, Bits(30)+1)
        return read((9, 13, 18, 30)[read(2)]) + 1

    small = read(1)
    rows = (read(5) + 1) * 8 if small else size()
    ratio = read(3)
    if ratio:
        numerator, denominator = _JXL_RATIOS[ratio]
        columns = rows * numerator // denominator
    else:
        columns = (read(5) + 1) * 8 if small else size()
    if len(codestream) < 2 + (position + 7) // 8:
        raise StreamError("the JPEG XL SizeHeader is truncated")
    return StreamImage(syntax, [data], rows, columns)


def _jxl_codestream(data: bytes) -> bytes:
    for kind, start, end in boxes(_in_memory(data), len(_JXL_CONTAINER), len(data)):
        if kind == b"jxlc":
            return data[start:end]
        if kind == b"jxlp":   # the first part of a codestream split over boxes, after its index
            return data[start + 4:end]
    raise StreamError("the JPEG XL container has no codestream box")
