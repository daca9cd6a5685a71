"""Transfer syntaxes of PS3.5 §10 and Annex A, and the media types PS3.18 §8.7.3 pairs them with."""
from __future__ import annotations

from dataclasses import dataclass

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION = "1.2.840.10008.1.2.4.111"
JPEG_XL = "1.2.840.10008.1.2.4.112"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


@dataclass(frozen=True)
class TransferSyntax:
    uid: str
    name: str
    compressed: bool
    lossy: bool = False
    bulk_media_type: str = "application/octet-stream"   # media type of its pixel data (PS3.18 table 8.7.3-2)
    lossy_method: str = ""    # Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1) of its lossy forms


_TABLE = [
    TransferSyntax(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", False),
    TransferSyntax(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", False),
    TransferSyntax(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "Deflated Explicit VR Little Endian", False),
    TransferSyntax(EXPLICIT_VR_BIG_ENDIAN, "Explicit VR Big Endian", False),
    TransferSyntax(JPEG_BASELINE, "JPEG Baseline (Process 1)", True, True, "image/jpeg", "ISO_10918_1"),
    TransferSyntax(JPEG_EXTENDED, "JPEG Extended (Process 2 & 4)", True, True, "image/jpeg", "ISO_10918_1"),
    TransferSyntax("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)", True, False, "image/jpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1", True, False, "image/jpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", True, False, "image/jls"),
    TransferSyntax("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", True, True, "image/jls", "ISO_14495_1"),
    TransferSyntax("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless", True, False, "image/jp2"),
    TransferSyntax("1.2.840.10008.1.2.4.91", "JPEG 2000", True, True, "image/jp2", "ISO_15444_1"),
    TransferSyntax(HTJ2K_LOSSLESS, "HTJ2K Lossless", True, False, "image/jphc"),
    TransferSyntax(HTJ2K_LOSSLESS_RPCL, "HTJ2K Lossless RPCL", True, False, "image/jphc"),
    TransferSyntax(HTJ2K, "HTJ2K", True, True, "image/jphc", "ISO_15444_15"),
    TransferSyntax(JPEG_XL_LOSSLESS, "JPEG XL Lossless", True, False, "image/jxl"),
    # Lossless recompression of JPEG data that was lossy already: its method is the JPEG's.
    TransferSyntax(JPEG_XL_JPEG_RECOMPRESSION, "JPEG XL JPEG Recompression", True, True, "image/jxl", "ISO_10918_1"),
    TransferSyntax(JPEG_XL, "JPEG XL", True, True, "image/jxl", "ISO_18181_1"),
    TransferSyntax(RLE_LOSSLESS, "RLE Lossless", True, False, "image/dicom-rle"),
    TransferSyntax("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Lossless", True, False, "image/jpx"),
    TransferSyntax("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2", True, True, "image/jpx", "ISO_15444_2"),
    TransferSyntax("1.2.840.10008.1.2.4.100", "MPEG2 MP@ML", True, True, "video/mpeg", "ISO_13818_2"),
    TransferSyntax("1.2.840.10008.1.2.4.101", "MPEG2 MP@HL", True, True, "video/mpeg", "ISO_13818_2"),
    TransferSyntax("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264", True, True, "video/mp4", "ISO_14496_10"),
    TransferSyntax("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible", True, True, "video/mp4", "ISO_14496_10"),
    TransferSyntax("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 for 2D video", True, True, "video/mp4", "ISO_14496_10"),
    TransferSyntax("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 for 3D video", True, True, "video/mp4", "ISO_14496_10"),
    TransferSyntax("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo", True, True, "video/mp4", "ISO_14496_10"),
    TransferSyntax("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile", True, True, "video/H265", "ISO_23008_2"),
    TransferSyntax("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile", True, True, "video/H265", "ISO_23008_2"),
]

TRANSFER_SYNTAXES: dict[str, TransferSyntax] = {ts.uid: ts for ts in _TABLE}
UNCOMPRESSED = frozenset(ts.uid for ts in _TABLE if not ts.compressed)
# Syntaxes whose pixel data is a series of frames, each coded on its own (no video).
FRAME_CODED = frozenset(ts.uid for ts in _TABLE if ts.compressed and not ts.bulk_media_type.startswith("video/"))

# PS3.18 table 8.7.3-5: the syntax a pixel data media type means when none is named.
DEFAULT_SYNTAX_OF_MEDIA_TYPE = {
    "application/octet-stream": EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": HTJ2K_LOSSLESS,
    "image/jxl": JPEG_XL_LOSSLESS,
    "image/dicom-rle": RLE_LOSSLESS,
}


def _teach_pydicom() -> None:
    """pydicom 3.0 (the newest release) predates the JPEG XL syntaxes of PS3.5 2024 and would
    not read or write an instance stored in one: its UID dictionary learns them here, as the
    entries its next release carries."""
    from pydicom._uid_dict import UID_dictionary

    for ts in _TABLE:
        if ts.uid not in UID_dictionary:
            keyword = "".join(word if word.isupper() else word.title() for word in ts.name.split())
            UID_dictionary[ts.uid] = (ts.name, "Transfer Syntax", "", "", keyword)


_teach_pydicom()


def describe(uid: str) -> str:
    ts = TRANSFER_SYNTAXES.get(uid)
    return f"{ts.name} ({uid})" if ts else uid
