"""Frame codecs: one frame's native pixels to a compressed syntax, and back.

Encoders, chosen by measurement (docs/benchmarks.md): Pillow (libjpeg-turbo)
for 8-bit lossy JPEG, an unambiguous JFIF stream, colour subsampled 4:2:2 and
so labelled YBR_FULL_422 as PS3.5 §8.2.1 asks (GDCM labels its YCbCr colour
streams RGB, and refuses odd-sized frames); GDCM for 12-bit JPEG and lossless
JPEG (processes 14 and 14 SV1), which no other installed library writes, and for RLE
(14 times faster than pydicom's own encoder, kept for the odd-sized frames GDCM refuses);
pydicom's plug-ins for JPEG-LS (CharLS through pyjpegls) and JPEG 2000 (OpenJPEG through
pylibjpeg-openjpeg), which take the lossy parameters we need and run as fast as
GDCM's; imagecodecs for HTJ2K (OpenJPH) and JPEG XL (libjxl), the only maintained encoders of
either on PyPI (pylibjpeg-openjpeg's OpenJPEG decodes HTJ2K but does not encode it), both
with their GIL let go. Decoding goes through pydicom's decoders (each syntax has a first choice
and fall-backs), pylibjpeg-rle directly for grey RLE, libjpeg-turbo (imagecodecs) for
grey lossless and 12-bit JPEG and GDCM for the colour ones of those, which pydicom's GDCM
plug-in refuses; imagecodecs for HTJ2K (OpenJPH decodes a 512² CT frame in 1.3 ms, OpenJPEG's
HTJ2K decoder in 2.6 ms) and JPEG XL, which pydicom has no decoder for.

GDCM's objects are built in memory, never from files, and only from frames
whose size matches the description: its codecs abort the process on
inconsistent input rather than raising.
"""
from __future__ import annotations

import ctypes
import io
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace

import gdcm
import imagecodecs
import numpy as np
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder
from rle.rle import decode_frame as rle_decode_frame

from .syntaxes import (
    HTJ2K, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, JPEG_BASELINE, JPEG_EXTENDED, JPEG_XL, JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL_LOSSLESS, RLE_LOSSLESS, TRANSFER_SYNTAXES,
)

# Lossy settings: visually lossless for diagnostic review at a useful saving.
JPEG_QUALITY = 90             # IJG quality
JPEG_LS_NEAR = 2              # largest error per sample
JPEG_2000_RATIO = 10          # compression ratio of the single quality layer…
JPEG_2000_MIN_BYTES = 1024    # …but never fewer bytes than this a frame, where headers would eat the image
HTJ2K_STEP = 1 / 256          # quantisation step of lossy HTJ2K, as a fraction of the frame's range of values
JPEG_XL_DISTANCE = 1.0        # libjxl's visually lossless distance, over the frame's range of values
# libjxl's effort: lossless effort 1 wrote a 512² CT frame in 0.6 ms at 2.79:1, effort 3 in 12 ms at
# 2.98:1, effort 7 in 131 ms at 3.14:1 (bench/transcode.py): on the fly, speed wins.
JPEG_XL_LOSSLESS_EFFORT = 1
JPEG_XL_LOSSY_EFFORT = 3

# pylibjpeg-openjpeg's encoder crashes (SIGSEGV) when two threads encode at once; its decoder
# and every other codec here were checked safe (tests/test_codecs.py, in threads).
_OPENJPEG_ENCODING = threading.Lock()

_GDCM_JPEG = {JPEG_BASELINE, JPEG_EXTENDED, "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
_GDCM_ENCODED = _GDCM_JPEG | {RLE_LOSSLESS}
# Lossless JPEG, which only GDCM decodes here: grey frames straight through it (pydicom's plug-in
# takes the slow way out of GDCM).
_GDCM_LOSSLESS = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
_PYDICOM_ENCODED = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
                    "1.2.840.10008.1.2.4.91"}
_HTJ2K = {HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K}
_JPEG_XL = {JPEG_XL_LOSSLESS, JPEG_XL}   # from pixels; .111 only from a JPEG codestream (recode_frame)
ENCODABLE = frozenset(_GDCM_ENCODED | _PYDICOM_ENCODED | _HTJ2K | _JPEG_XL)
DECODED_HERE = frozenset(_HTJ2K | _JPEG_XL | {JPEG_XL_JPEG_RECOMPRESSION})   # not through pydicom's plug-ins
# Codestream to codestream, never through pixels: JPEG XL's lossless recompression of a JPEG
# Baseline frame, and the original JPEG bytes back from it (PS3.5 A.4, JPEG XL).
RECODABLE = frozenset({(JPEG_BASELINE, JPEG_XL_JPEG_RECOMPRESSION), (JPEG_XL_JPEG_RECOMPRESSION, JPEG_BASELINE)})


class ConversionError(Exception):
    """An instance that cannot be converted as asked (its data, not a fault of ours)."""


class CodecError(ConversionError):
    """Pixel data that cannot be encoded or decoded as asked."""


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel module attributes a codec needs (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0
    number_of_frames: int = 1

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame; 4:2:2 native data holds two samples a pixel (PS3.3 C.7.6.3.1.2)."""
        samples = 2 if self.photometric_interpretation in ("YBR_FULL_422", "YBR_PARTIAL_422") \
            else self.samples_per_pixel
        return (self.rows * self.columns * samples * self.bits_allocated + 7) // 8   # 1-bit: rounded up

    @property
    def native_length(self) -> int:
        if self.bits_allocated % 8:   # bit-packed frames follow each other bit by bit (PS3.5 8.1.1)
            return (self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
                    * self.number_of_frames + 7) // 8
        return self.frame_length * self.number_of_frames

    def bit_span(self, number: int) -> tuple[int, int, int]:
        """(first byte, bytes to read, bit offset in the first byte) of bit-packed frame ``number``."""
        count = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        first = (number - 1) * count
        return first // 8, (first % 8 + count + 7) // 8, first % 8

    @classmethod
    def from_dataset(cls, ds) -> "PixelDescription":
        try:
            return cls(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1),
                       int(ds.BitsAllocated), int(ds.get("BitsStored") or ds.BitsAllocated),
                       int(ds.get("PixelRepresentation", 0) or 0),
                       str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
                       int(ds.get("PlanarConfiguration", 0) or 0), int(ds.get("NumberOfFrames", 1) or 1))
        except (AttributeError, TypeError, ValueError) as exc:
            raise CodecError(f"the image pixel description is incomplete: {exc}") from None

    @classmethod
    def from_json(cls, model: dict) -> "PixelDescription | None":
        """From a DICOM JSON object; None when it has no pixel data or no usable description."""
        def first(tag: str, default=None):
            values = model.get(tag, {}).get("Value")
            return values[0] if values else default

        if "7FE00010" not in model:
            return None
        try:
            bits = int(first("00280100"))
            return cls(int(first("00280010")), int(first("00280011")), int(first("00280002", 1)), bits,
                       int(first("00280101", bits)), int(first("00280103", 0)),
                       str(first("00280004", "MONOCHROME2")), int(first("00280006", 0)),
                       int(first("00280008", 1)))
        except (TypeError, ValueError):
            return None


def repack_bits(data: bytes, shift: int, count: int) -> bytes:
    """``count`` bits from bit ``shift`` of ``data`` (least significant bit first, PS3.5 8.1.1),
    packed again from the first bit of a byte: a 1-bit frame as a value of its own."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[shift:shift + count]
    if len(bits) < count:
        raise CodecError(f"the pixel data holds {len(bits)} bits of a frame of {count}")
    return np.packbits(bits, bitorder="little").tobytes()


def unsuitable(target: str, pixels: PixelDescription) -> str | None:
    """Why pixels so described cannot be encoded in ``target``; None when they can."""
    if target == JPEG_XL_JPEG_RECOMPRESSION:
        return "JPEG XL JPEG Recompression is made from JPEG Baseline frames only, not from pixels"
    if target not in ENCODABLE:
        return f"no encoder for {TRANSFER_SYNTAXES[target].name if target in TRANSFER_SYNTAXES else target}"
    syntax = TRANSFER_SYNTAXES[target]
    bits, stored = pixels.bits_allocated, pixels.bits_stored
    if bits not in (8, 16):
        return f"{bits}-bit pixels are not encoded in {syntax.name}"
    if pixels.samples_per_pixel not in (1, 3):
        return f"{pixels.samples_per_pixel} samples per pixel are not encoded in {syntax.name}"
    if pixels.photometric_interpretation.startswith("YBR") and pixels.photometric_interpretation != "YBR_FULL":
        return f"{pixels.photometric_interpretation} pixels are sent decompressed only"
    if syntax.lossy and pixels.photometric_interpretation == "PALETTE COLOR":
        return "palette indices are never compressed lossily"
    if target == JPEG_BASELINE and (bits != 8 or pixels.pixel_representation):
        return "JPEG Baseline holds unsigned 8-bit samples only"
    if target == JPEG_EXTENDED and (stored > 12 or pixels.pixel_representation):
        return "JPEG Extended holds unsigned samples of at most 12 bits"
    if target == JPEG_EXTENDED and pixels.samples_per_pixel == 3 and bits != 8:
        return "JPEG Extended colour is encoded from 8-bit samples only"
    if target in _JPEG_XL and pixels.pixel_representation:
        return "JPEG XL holds unsigned samples only"
    if target in _GDCM_JPEG and pixels.frame_length % 2 and not (syntax.lossy and bits == 8):
        return f"GDCM does not encode frames of an odd number of bytes in {syntax.name}"
    # The encoders refuse tiny images: OpenJPEG's five decomposition levels need 32 pixels a side.
    smallest = 32 if syntax.bulk_media_type == "image/jp2" else 8
    if min(pixels.rows, pixels.columns) < smallest:
        return f"images smaller than {smallest} pixels a side are not encoded in {syntax.name}"
    return None


def encode_frame(native: bytes, pixels: PixelDescription, target: str) -> tuple[bytes, str]:
    """One frame of native little endian pixels (planar configuration as described) encoded
    in ``target``; returns the codestream and the photometric interpretation it carries."""
    reason = unsuitable(target, pixels)
    if reason:
        raise CodecError(reason)
    if len(native) != pixels.frame_length:
        raise CodecError(f"a frame holds {len(native)} bytes, not the {pixels.frame_length} its description says")
    if pixels.samples_per_pixel == 3 and pixels.planar_configuration == 1:
        native = _interleave(native, pixels)
    if target in (JPEG_BASELINE, JPEG_EXTENDED) and pixels.bits_allocated == 8:
        return _pillow_encode(native, pixels)
    if target in _GDCM_JPEG or (target == RLE_LOSSLESS and len(native) % 2 == 0):
        return _gdcm_encode(native, pixels, target)
    if target in _HTJ2K or target in _JPEG_XL:
        return _imagecodecs_encode(native, pixels, target), pixels.photometric_interpretation
    options = {"jls_error": JPEG_LS_NEAR} if target.endswith(".81") else \
        {"j2k_cr": [max(1.0, min(JPEG_2000_RATIO, pixels.frame_length / JPEG_2000_MIN_BYTES))]} \
        if target.endswith(".91") else \
        {"encoding_plugin": "pydicom"} if target == RLE_LOSSLESS else {}   # odd-sized frames, which GDCM refuses
    serial = _OPENJPEG_ENCODING if TRANSFER_SYNTAXES[target].bulk_media_type == "image/jp2" else nullcontext()
    try:
        with serial, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = get_encoder(target).encode(
                native, rows=pixels.rows, columns=pixels.columns, samples_per_pixel=pixels.samples_per_pixel,
                bits_allocated=pixels.bits_allocated, bits_stored=pixels.bits_stored,
                pixel_representation=pixels.pixel_representation,
                photometric_interpretation=pixels.photometric_interpretation, planar_configuration=0,
                number_of_frames=1, use_mct=False, **options)
    except Exception as exc:   # each plug-in fails in its own way
        raise CodecError(f"encoding to {TRANSFER_SYNTAXES[target].name} failed: {exc}") from None
    return bytes(data), pixels.photometric_interpretation   # some plug-ins give a bytearray; WSGI wants bytes


def decode_frame(data: bytes, pixels: PixelDescription, source: str) -> tuple[bytes, PixelDescription]:
    """One frame's codestream decoded to native little endian pixels, interleaved; returns them
    with their description (YCbCr JPEG comes out as RGB, as PS3.5 §8.2.1 expects). A codestream
    whose own header declares another size than the description is refused before any decoder
    allocates for it: the header is the sender's word, like the description."""
    check_declared_size(data, pixels, source)
    if (source == JPEG_EXTENDED and pixels.bits_stored > 8) or (source in _GDCM_LOSSLESS and pixels.samples_per_pixel == 1):
        if pixels.samples_per_pixel == 1:
            decoded = _turbo_decode(data, pixels)
            if decoded is not None:
                return decoded
        return _gdcm_decode(data, pixels, source)
    if source == RLE_LOSSLESS and pixels.samples_per_pixel == 1 and pixels.bits_allocated in (8, 16, 32):
        return _rle_decode(data, pixels)
    if source == JPEG_XL_JPEG_RECOMPRESSION:   # the pixels of the JPEG it holds, decoded as that JPEG would be
        return decode_frame(recode_frame(data, source, JPEG_BASELINE), pixels, JPEG_BASELINE)
    if source in _HTJ2K or source in _JPEG_XL:
        return _imagecodecs_decode(data, pixels, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array, meta = get_decoder(source).as_array(
                encapsulate([data], has_bot=False), rows=pixels.rows, columns=pixels.columns, samples_per_pixel=pixels.samples_per_pixel,
                bits_allocated=pixels.bits_allocated, bits_stored=pixels.bits_stored,
                pixel_representation=pixels.pixel_representation,
                photometric_interpretation=pixels.photometric_interpretation,
                planar_configuration=pixels.planar_configuration, number_of_frames=1, as_rgb=True)
    except Exception as exc:
        raise CodecError(f"the pixel data could not be decoded: {exc}") from None
    decoded = replace(pixels, photometric_interpretation=meta.get("photometric_interpretation",
                                                                  pixels.photometric_interpretation),
                      planar_configuration=0, number_of_frames=1)
    dtype = f"<{'i' if pixels.pixel_representation else 'u'}{pixels.bits_allocated // 8}"
    native = np.ascontiguousarray(array).astype(dtype, copy=False).tobytes()
    if len(native) != decoded.frame_length:
        raise CodecError(f"a decoded frame holds {len(native)} bytes, not {decoded.frame_length}")
    return native, decoded


def recode_frame(data: bytes, source: str, target: str) -> bytes:
    """One frame's codestream in ``source`` rewritten in ``target`` without decoding its pixels:
    a pair of RECODABLE. A JPEG Baseline frame libjxl cannot recompress (progressive or
    arithmetic coding, which Baseline excludes anyway) raises CodecError."""
    try:
        if (source, target) == (JPEG_BASELINE, JPEG_XL_JPEG_RECOMPRESSION):
            return bytes(imagecodecs.jpegxl_encode_jpeg(data, numthreads=1))
        if (source, target) == (JPEG_XL_JPEG_RECOMPRESSION, JPEG_BASELINE):
            return bytes(imagecodecs.jpegxl_decode_jpeg(data, numthreads=1))
    except Exception as exc:   # imagecodecs.JpegxlError, for a stream it does not take
        raise CodecError(f"the frame could not be rewritten in {TRANSFER_SYNTAXES[target].name}: {exc}") from None
    raise CodecError(f"{describe_pair(source, target)} is not a codestream rewrite")


def describe_pair(source: str, target: str) -> str:
    return f"{TRANSFER_SYNTAXES[source].name if source in TRANSFER_SYNTAXES else source} to " \
           f"{TRANSFER_SYNTAXES[target].name if target in TRANSFER_SYNTAXES else target}"


def _array(native: bytes, pixels: PixelDescription) -> np.ndarray:
    dtype = f"<{'i' if pixels.pixel_representation else 'u'}{pixels.bits_allocated // 8}"
    shape = (pixels.rows, pixels.columns) if pixels.samples_per_pixel == 1 else \
        (pixels.rows, pixels.columns, pixels.samples_per_pixel)
    return np.frombuffer(native, dtype).reshape(shape)


def _imagecodecs_encode(native: bytes, pixels: PixelDescription, target: str) -> bytes:
    """An interleaved frame in HTJ2K or JPEG XL, its colour kept as it is (no colour transform,
    as for JPEG 2000: the photometric interpretation stays the description's)."""
    array = _array(native, pixels)
    try:
        if target in _HTJ2K:
            # PS3.5 10.18: the RPCL form has the TLM marker and a lowest resolution of at most
            # 64 pixels a side; each resolution in its own tile-part, for streaming by resolution.
            levels = max(5, (-(-max(pixels.rows, pixels.columns) // 64) - 1).bit_length())
            options = {"tlm": True, "tilepart": 1} if target == HTJ2K_LOSSLESS_RPCL else {}
            if target == HTJ2K:
                # OpenJPH's step is a fraction of the sample word's range; the frame's own range decides,
                # so that a frame using few of its bits keeps its detail.
                span = max(1, int(array.max()) - int(array.min()))
                step = HTJ2K_STEP * span / 2.0 ** pixels.bits_allocated
                return bytes(imagecodecs.htj2k_encode(array, level=step, reversible=False, rgb=False,
                                                      resolutions=levels + 1))
            return bytes(imagecodecs.htj2k_encode(array, reversible=True, rgb=False, resolutions=levels + 1,
                                                  **options))
        stored = pixels.bits_stored if int(array.max(initial=0)) < 1 << pixels.bits_stored else pixels.bits_allocated
        if target == JPEG_XL_LOSSLESS:
            return bytes(imagecodecs.jpegxl_encode(array, lossless=True, effort=JPEG_XL_LOSSLESS_EFFORT,
                                                   bitspersample=stored, numthreads=1))
        # libjxl judges distance against the nominal range of the bits, which a medical frame uses a
        # part of (a CR slice: 800 of 4096 values) and is windowed to: its own range decides instead.
        span = max(1, int(array.max()) - int(array.min()))
        distance = max(0.05, min(JPEG_XL_DISTANCE, JPEG_XL_DISTANCE * span / 2 ** stored))
        return bytes(imagecodecs.jpegxl_encode(array, distance=distance, effort=JPEG_XL_LOSSY_EFFORT,
                                               bitspersample=stored, numthreads=1))
    except Exception as exc:   # imagecodecs.Htj2kError, JpegxlError, and ValueError for a shape they refuse
        raise CodecError(f"encoding to {TRANSFER_SYNTAXES[target].name} failed: {exc}") from None


def _imagecodecs_decode(data: bytes, pixels: PixelDescription, source: str) -> tuple[bytes, PixelDescription]:
    try:
        array = imagecodecs.htj2k_decode(data, planar=False) if source in _HTJ2K else \
            imagecodecs.jpegxl_decode(data, numthreads=1)
    except Exception as exc:
        raise CodecError(f"the pixel data could not be decoded: {exc}") from None
    dtype = np.dtype(f"<{'i' if pixels.pixel_representation else 'u'}{pixels.bits_allocated // 8}")
    if array.dtype.itemsize != dtype.itemsize or array.size != pixels.rows * pixels.columns * pixels.samples_per_pixel:
        raise CodecError(f"a decoded frame holds {array.size} samples of {array.dtype.itemsize * 8} bits, "
                         f"not the {pixels.rows}x{pixels.columns}x{pixels.samples_per_pixel} of "
                         f"{pixels.bits_allocated} its description says")
    photometric = pixels.photometric_interpretation
    if pixels.samples_per_pixel == 3 and photometric in ("YBR_RCT", "YBR_ICT"):
        photometric = "RGB"   # OpenJPH undoes JPEG 2000's colour transforms
    decoded = replace(pixels, photometric_interpretation=photometric, planar_configuration=0, number_of_frames=1)
    return np.ascontiguousarray(array).astype(dtype, copy=False).tobytes(), decoded


def _turbo_decode(data: bytes, pixels: PixelDescription) -> tuple[bytes, PixelDescription] | None:
    """A grey lossless or 12-bit JPEG frame decoded by libjpeg-turbo 3 (through imagecodecs): twice
    as fast as GDCM, and the GIL let go meanwhile (GDCM holds it: two threads decoded fewer
    frames than one). None, for GDCM to decode, where it cannot (GDCM writes 12-bit samples as of
    16-bit precision, which libjpeg-turbo refuses) or its samples are not the description's words
    (8-bit samples in 16-bit words)."""
    try:
        array = imagecodecs.jpeg8_decode(data)
    except Exception:   # imagecodecs.Jpeg8Error; GDCM has its say
        return None
    if array.shape != (pixels.rows, pixels.columns) or array.dtype.itemsize * 8 != pixels.bits_allocated:
        return None   # else it holds the frame's length exactly: one sample of bits_allocated a pixel
    return array.tobytes(), replace(pixels, planar_configuration=0, number_of_frames=1)


def _rle_decode(data: bytes, pixels: PixelDescription) -> tuple[bytes, PixelDescription]:
    """A grey RLE frame decoded by pylibjpeg-rle directly: its output is the native little endian
    frame already, and pydicom's plug-in path around it (re-encapsulating the frame, an array,
    masking unused bits) cost three times the decoding (docs/benchmarks.md)."""
    try:
        native = bytes(rle_decode_frame(data, pixels.rows * pixels.columns, pixels.bits_allocated, "<"))
    except Exception as exc:   # ValueError for a damaged stream; anything the extension raises
        raise CodecError(f"the pixel data could not be decoded: {exc}") from None
    if len(native) != pixels.frame_length:
        raise CodecError(f"a decoded frame holds {len(native)} bytes, not {pixels.frame_length}")
    return native, replace(pixels, planar_configuration=0, number_of_frames=1)


def check_declared_size(data: bytes, pixels: PixelDescription, source: str) -> None:
    """CodecError unless a JPEG, JPEG-LS or JPEG 2000 codestream's header (SOF, SOF55, SIZ)
    declares the rows, columns and samples of ``pixels``; other codestreams declare no size."""
    from .streams import StreamError, describe_stream

    known = TRANSFER_SYNTAXES.get(source)
    media_type = known.bulk_media_type if known is not None else None
    if media_type not in ("image/jpeg", "image/jls", "image/jp2", "image/jpx", "image/jphc", "image/jxl"):
        return
    try:
        declared = describe_stream(media_type, data[:1 << 16] if media_type != "image/jpeg" else data, source)
    except StreamError as exc:
        raise CodecError(f"the pixel data could not be decoded: its codestream header: {exc}") from None
    found = (declared.rows, declared.columns, declared.samples_per_pixel)
    expected = (pixels.rows, pixels.columns, pixels.samples_per_pixel if found[2] is not None else None)
    if found != expected:
        def shape(rows, columns, samples):
            return f"{rows}x{columns}" + (f" with {samples} sample(s)" if samples is not None else "")
        raise CodecError(f"the pixel data could not be decoded: its codestream declares {shape(*found)}, "
                         f"the instance {shape(*expected)}")


def _interleave(native: bytes, pixels: PixelDescription) -> bytes:
    planes = np.frombuffer(native, f"<u{pixels.bits_allocated // 8}").reshape(3, pixels.rows, pixels.columns)
    return np.ascontiguousarray(planes.transpose(1, 2, 0)).tobytes()


def _pillow_encode(native: bytes, pixels: PixelDescription) -> tuple[bytes, str]:
    if pixels.samples_per_pixel == 1:
        image = Image.frombuffer("L", (pixels.columns, pixels.rows), native, "raw", "L", 0, 1)
        photometric = pixels.photometric_interpretation
    else:
        mode = "YCbCr" if pixels.photometric_interpretation == "YBR_FULL" else "RGB"
        image = Image.frombuffer(mode, (pixels.columns, pixels.rows), native, "raw", mode, 0, 1)
        photometric = "YBR_FULL_422"
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=1)   # 1: 4:2:2
    return out.getvalue(), photometric


def _gdcm_image(holder, pixels: PixelDescription, syntax: str):
    # The image belongs to a GDCM reader or writer kept alive by the caller: a gdcm.Image
    # created from Python is freed by Python while GDCM still counts references to it.
    image = holder.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((pixels.columns, pixels.rows, 1))
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(
        gdcm.PhotometricInterpretation.GetPIType(pixels.photometric_interpretation)))
    image.SetPixelFormat(gdcm.PixelFormat(pixels.samples_per_pixel, pixels.bits_allocated, pixels.bits_stored,
                                          pixels.bits_stored - 1, pixels.pixel_representation))
    image.SetPlanarConfiguration(0)
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    return image


def _gdcm_value(value) -> bytes:
    """A gdcm.ByteValue's bytes, copied from its own memory: GetBuffer's str round trip costs
    25 ms for a 3 MB codestream, this 0.2 ms. The caller keeps the owner alive."""
    return ctypes.string_at(int(value.GetVoidPointer()), int(str(value.GetLength())))


def _gdcm_encode(native: bytes, pixels: PixelDescription, target: str) -> tuple[bytes, str]:
    writer = gdcm.ImageWriter()
    image = _gdcm_image(writer, pixels, "1.2.840.10008.1.2.1")
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetByteStringValue(native + b"\0" * (len(native) % 2))   # GDCM wants the even length of a DICOM value
    image.SetDataElement(element)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(target)))
    if target in _GDCM_JPEG:
        codec = gdcm.JPEGCodec()
        lossy = TRANSFER_SYNTAXES[target].lossy
        codec.SetLossless(not lossy)
        if lossy:
            codec.SetQuality(JPEG_QUALITY)
        change.SetUserCodec(codec)
    change.SetInput(image)
    if not change.Change():
        raise CodecError(f"GDCM could not encode the frame in {TRANSFER_SYNTAXES[target].name}")
    output = change.GetOutput()
    fragments = output.GetDataElement().GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != 1:
        raise CodecError("GDCM's encoder did not produce one fragment")
    fragment = fragments.GetFragment(0)
    data = _gdcm_value(fragment.GetByteValue())
    return data, str(output.GetPhotometricInterpretation()).strip()


def _gdcm_decode(data: bytes, pixels: PixelDescription, source: str) -> tuple[bytes, PixelDescription]:
    reader = gdcm.ImageReader()
    image = _gdcm_image(reader, pixels, source)
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(data)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    element.SetVLToUndefined()
    image.SetDataElement(element)
    # Decoded into a data element of GDCM's own, copied out from its memory: the image's
    # GetBuffer hands a str over, whose round trip cost twice the decoding of a 512² frame.
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    change.SetInput(image)
    if not change.Change():
        raise CodecError("the pixel data could not be decoded by GDCM")
    value = change.GetOutput().GetDataElement().GetByteValue()
    if value is None:
        raise CodecError("the pixel data could not be decoded by GDCM")
    native = _gdcm_value(value)
    if len(native) != pixels.frame_length:
        raise CodecError("the pixel data could not be decoded by GDCM")
    return native, replace(pixels, planar_configuration=0, number_of_frames=1)
