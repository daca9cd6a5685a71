"""Whole instances re-encoded in another transfer syntax.

Three steps on a pydicom data set: read it (big endian binary values swapped to
little endian), bring compressed pixels to native (decoding every frame), and
write it in the target: as it is for the uncompressed syntaxes, or with each
frame encoded and encapsulated (PS3.5 A.4) for the compressed ones. That holds
the instance in memory; ``write_streamed`` does the same from the data set up to
Pixel Data and the frames one at a time, which the server uses wherever it can
read frames one by one. Every
attribute but those describing the pixel encoding is kept; the SOP Instance UID
too, as PS3.5 allows for a change of transfer syntax, and lossy results are
marked as PS3.3 C.7.6.1.1.5 asks.
"""
from __future__ import annotations

import io
import itertools
import shutil
import struct
import tempfile
import warnings
from dataclasses import replace
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import pydicom
from pydicom import dcmwrite
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.valuerep import VR

from .codecs import (
    DECODED_HERE, ENCODABLE, RECODABLE, CodecError, ConversionError, PixelDescription, decode_frame, encode_frame,
    recode_frame, unsuitable,
)
from .syntaxes import (
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, FRAME_CODED, IMPLICIT_VR_LITTLE_ENDIAN, JPEG_EXTENDED,
    TRANSFER_SYNTAXES, UNCOMPRESSED, describe,
)

# Word sizes of the binary VRs whose values depend on byte order (PS3.5 §7.3).
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _decoder_available(uid: str) -> bool:
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


# Compressed syntaxes whose pixels an installed decoder reads.
DECODABLE = frozenset(uid for uid in FRAME_CODED if _decoder_available(uid) or uid == JPEG_EXTENDED
                      or uid in DECODED_HERE)


def can_transcode(source: str, target: str, pixels: PixelDescription | None = None) -> bool:
    """Whether an instance stored in ``source`` can be sent in ``target``.

    ``pixels`` (the stored pixel description, None for an instance without pixel
    data) decides for a compressed target, which needs an image that fits it.
    """
    if source == target or (source, target) in RECODABLE:
        return True
    if target not in TRANSFER_SYNTAXES or (source not in UNCOMPRESSED and source not in DECODABLE):
        return False
    if target in UNCOMPRESSED:
        return True
    if target not in ENCODABLE or pixels is None:
        return False
    if source not in UNCOMPRESSED and pixels.photometric_interpretation.startswith("YBR"):
        pixels = PixelDescription(**{**pixels.__dict__, "photometric_interpretation": "RGB"})   # decoded as RGB
    return unsuitable(target, pixels) is None


def transcode(fp: BinaryIO, target: str, source: str) -> bytes:
    """The Part 10 file ``fp``, stored in ``source``, re-encoded in ``target``, in memory.

    Raises ConversionError (CodecError for pixel data) when that is impossible.
    """
    recoded = (source, target) in RECODABLE
    if target not in UNCOMPRESSED and target not in ENCODABLE and not recoded:
        sources = [TRANSFER_SYNTAXES[name].name for name, to in RECODABLE if to == target]
        if sources:
            raise CodecError(f"{TRANSFER_SYNTAXES[target].name} is made from {' or '.join(sources)} frames only")
        raise ConversionError(f"there is no encoder for {describe(target)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp)
        if recoded and "PixelData" in ds:
            pixels = PixelDescription.from_dataset(ds)
            frames = ((frame, pixels) for frame in generate_frames(ds.PixelData, number_of_frames=pixels.number_of_frames))
            return _streamed(ds, frames, pixels, source, target)
        if source == EXPLICIT_VR_BIG_ENDIAN:
            _swap_byte_order(ds)
        if source not in UNCOMPRESSED and "PixelData" in ds:
            _decode(ds, source)
        if "PixelData" not in ds:
            if target not in UNCOMPRESSED:
                raise CodecError(f"there is no image to encode in {TRANSFER_SYNTAXES[target].name}")
            return _write(ds, target)
        try:
            pixels = PixelDescription.from_dataset(ds)
        except CodecError:
            if target not in UNCOMPRESSED:
                raise
            return _write(ds, target)    # damaged description: the values re-encoded as they are
        if not streamable(target) or pixels.bits_allocated % 8:   # deflate; bit-packed frames
            return _write(ds, target)
        native, size = ds.PixelData, pixels.frame_length
        if len(native) < size * pixels.number_of_frames:
            raise CodecError(f"the pixel data holds {len(native)} bytes, less than its description's "
                             f"{size * pixels.number_of_frames}")
        frames = ((native[i * size:(i + 1) * size], pixels) for i in range(pixels.number_of_frames))
        return _streamed(ds, frames, pixels, source, target)


def _streamed(ds: pydicom.Dataset, frames: Iterable[tuple[bytes, PixelDescription]], pixels: PixelDescription,
              source: str, target: str) -> bytes:
    """``write_streamed`` of an instance read whole, into memory."""
    out = io.BytesIO()
    write_streamed(_before_pixels(ds), frames, pixels.number_of_frames, source, target, out)
    return out.getvalue()


def _before_pixels(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The data set without Pixel Data and what follows it: trailing padding, and digital
    signatures, which a new encoding invalidates (PS3.15 C.1)."""
    header = pydicom.Dataset()
    header.file_meta = ds.file_meta
    header.preamble = ds.preamble
    for elem in ds:
        if elem.tag >= 0x7FE00010:
            break
        header.add(elem)
    header.set_original_encoding(*ds.original_encoding, ds.original_character_set)
    return header


def _decode(ds: pydicom.Dataset, source: str) -> None:
    pixels = PixelDescription.from_dataset(ds)
    if (source == JPEG_EXTENDED and pixels.bits_stored > 8) or source in DECODED_HERE:   # no pydicom plug-in
        frames = [decode_frame(frame, pixels, source)
                  for frame in generate_frames(ds.PixelData, number_of_frames=pixels.number_of_frames)]
        ds.PixelData = b"".join(native for native, _ in frames)
        if frames:
            ds.PhotometricInterpretation = frames[-1][1].photometric_interpretation
        ds["PixelData"].is_undefined_length = False
        ds["PixelData"].VR = VR.OB if pixels.bits_allocated <= 8 else VR.OW
        ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    else:
        try:
            ds.decompress(generate_instance_uid=False)   # the same instance, decoded: same UID
        except Exception as exc:   # each plug-in fails in its own way
            raise CodecError(f"the pixel data could not be decoded: {exc}") from None
    if TRANSFER_SYNTAXES[source].lossy:
        _mark_lossy(ds, TRANSFER_SYNTAXES[source].lossy_method, None)


def _mark_lossy(ds: pydicom.Dataset, method: str, ratio: float | None) -> None:
    """Lossy Image Compression (0028,2110) and, per lossy step, its ratio and method (PS3.3 C.7.6.1.1.5):
    a new step adds a value to each; a decoded lossy instance gets them if its sender left them out."""
    if ratio is None and ds.get("LossyImageCompression") == "01" and "LossyImageCompressionMethod" in ds:
        return
    ds.LossyImageCompression = "01"
    if ratio is None:
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
        return
    ratios = [str(v) for v in _values(ds.get("LossyImageCompressionRatio"))]
    methods = [str(v) for v in _values(ds.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, method]


def _values(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]


def _write(ds: pydicom.Dataset, target: str) -> bytes:
    if target == EXPLICIT_VR_BIG_ENDIAN:
        _swap_byte_order(ds)
    out = io.BytesIO()
    _write_dataset(ds, target, out)
    return out.getvalue()


def _swap_byte_order(ds: pydicom.Dataset) -> None:
    """Swap the binary values pydicom keeps as bytes between big and little endian (its own inverse)."""
    bits = int(ds.get("BitsAllocated", 16) or 16)
    for elem in ds.iterall():
        size = _WORD_SIZE.get(elem.VR)
        if elem.tag == 0x7FE00010 and bits > 8 and not elem.is_undefined_length:
            size = bits // 8   # pixel data samples are swapped by their own size, as pydicom reads them
        if size and isinstance(elem.value, (bytes, bytearray)) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


def streamable(target: str) -> bool:
    """Whether ``write_streamed`` writes this target (Deflate compresses the whole data set,
    so it is made in memory)."""
    return target in (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN) \
        or target in ENCODABLE or any(target == to for _, to in RECODABLE)


def write_streamed(header: pydicom.Dataset, frames: Iterable[tuple[bytes, PixelDescription]], count: int,
                   source: str, target: str, out: BinaryIO) -> None:
    """Write a Part 10 instance in ``target`` to ``out`` from its data set up to Pixel Data
    and its frames as native little endian pixels, one at a time: memory holds one frame.
    For a pair of RECODABLE syntaxes the frames are the stored codestreams instead, rewritten.

    Compressed frames are encoded into a spool first, so that the Basic Offset Table and the
    lossy compression ratio, which come before them, are known.
    """
    if target in UNCOMPRESSED:
        for piece in uncompressed_pieces(lambda: header, frames, count, source, target):
            out.write(piece)
        return
    frames = iter(frames)
    with warnings.catch_warnings(), tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as encoded:
        warnings.simplefilter("ignore")
        if source not in UNCOMPRESSED and TRANSFER_SYNTAXES[source].lossy:
            _mark_lossy(header, TRANSFER_SYNTAXES[source].lossy_method, None)
        recoded = (source, target) in RECODABLE
        sizes, photometric, description = [], None, None
        for frame, description in frames:
            data, photometric = (recode_frame(frame, source, target), description.photometric_interpretation) \
                if recoded else encode_frame(frame, description, target)
            encoded.write(data + b"\0" * (len(data) % 2))
            sizes.append(len(data) + len(data) % 2)
        if description is None:
            raise CodecError("the instance has no frames to encode")
        _describe(header, photometric, replace(description, planar_configuration=0))
        if TRANSFER_SYNTAXES[target].lossy and not recoded:   # a rewrite loses nothing more
            _mark_lossy(header, TRANSFER_SYNTAXES[target].lossy_method,
                        description.frame_length * count / max(1, sum(sizes)))
        _write_dataset(header, target, out)
        _element_header(out, 0x7FE00010, b"OB", _UNDEFINED, True, False)
        offsets = [0, *itertools.accumulate(size + 8 for size in sizes[:-1])]   # each item: 8-byte header
        table = struct.pack(f"<{len(offsets)}I", *offsets) if offsets[-1] < 1 << 32 else b""
        out.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table)
        encoded.seek(0)
        for size in sizes:
            out.write(struct.pack("<HHI", 0xFFFE, 0xE000, size))
            shutil.copyfileobj(_Limited(encoded, size), out)
        out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def uncompressed_pieces(header: Callable[[], pydicom.Dataset], frames: Iterable[tuple[bytes, PixelDescription]],
                        count: int, source: str, target: str, prefix: bytes | None = None) -> Iterator[bytes]:
    """A Part 10 instance in the uncompressed ``target``, in pieces made as they are asked for: the
    data set up to Pixel Data (``header()``, written by pydicom), the Pixel Data element's header,
    then the frames, given as native little endian pixels, one at a time. ``prefix``, where given,
    is the data set up to Pixel Data already in ``target`` (storage.dataset.decoded_prefix), sent
    as it is when the first frame confirms that decoding keeps it (one sample a pixel)."""
    frames = iter(frames)
    first, description = next(frames, (None, None))
    if description is None:
        raise CodecError("the instance has no frames")
    little = target != EXPLICIT_VR_BIG_ENDIAN
    lossy = source not in UNCOMPRESSED and TRANSFER_SYNTAXES[source].lossy
    out = io.BytesIO()
    if prefix is not None and target == EXPLICIT_VR_LITTLE_ENDIAN and not lossy and description.samples_per_pixel == 1:
        out.write(prefix)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = header()
            if lossy:
                _mark_lossy(dataset, TRANSFER_SYNTAXES[source].lossy_method, None)
            _describe(dataset, description.photometric_interpretation, description)
            if not little:
                _swap_byte_order(dataset)
            _write_dataset(dataset, target, out)
    length = description.frame_length * count
    vr = b"OW" if description.bits_allocated > 8 else b"OB"
    _element_header(out, 0x7FE00010, vr, length + length % 2, little, target == IMPLICIT_VR_LITTLE_ENDIAN)
    yield out.getvalue()   # the data set and the element's header in one piece: one write, not two
    word = description.bits_allocated // 8
    for frame in itertools.chain([first], (f for f, _ in frames)):
        yield frame if little or word == 1 else np.frombuffer(frame, f"<u{word}").astype(f">u{word}").tobytes()
    if length % 2:
        yield b"\0"


_SPOOL_MEMORY = 4 << 20   # of encoded frames kept in memory before the spool goes to disk
_UNDEFINED = 0xFFFFFFFF


def _describe(ds: pydicom.Dataset, photometric: str, description: PixelDescription) -> None:
    """The Image Pixel attributes a conversion may change."""
    ds.PhotometricInterpretation = photometric
    if description.samples_per_pixel > 1:
        ds.PlanarConfiguration = description.planar_configuration


def _write_dataset(ds: pydicom.Dataset, target: str, out: BinaryIO) -> None:
    ds.file_meta.TransferSyntaxUID = target
    try:
        dcmwrite(out, ds, implicit_vr=target == IMPLICIT_VR_LITTLE_ENDIAN,
                 little_endian=target != EXPLICIT_VR_BIG_ENDIAN, force_encoding=True)
    except Exception as exc:   # values pydicom read but cannot write back (damaged files)
        raise ConversionError(f"the data set could not be written: {exc}") from None


def _element_header(out: BinaryIO, tag: int, vr: bytes, length: int, little: bool, implicit: bool) -> None:
    order = "<" if little else ">"
    if implicit:
        out.write(struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, length))
    else:
        out.write(struct.pack(order + "HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack(order + "HI", 0, length))


class _Limited:
    """The next ``size`` bytes of a file, for copyfileobj."""

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp, self.left = fp, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fp.read(n)
        self.left -= len(data)
        return data
