"""Rendering: a frame's pixels to an 8-bit image a browser can show (PS3.18 §8.3.5).

The presentation pipeline of PS3.3 C.11 on numpy arrays: Modality LUT (rescale or
LUT), then VOI — the window asked for, else the data set's window or VOI LUT, else
the frame's own range —, MONOCHROME1 inverted; palette colour through its LUTs;
colour (YCbCr already made RGB by the decoder) scaled to 8 bits. Then the pixel
aspect ratio, the viewport (source region, flips, fit within the size asked,
keeping proportions), burned-in annotations, and the encoding (JPEG, PNG, GIF —
animated for several frames). Pure functions: no storage, no HTTP.
"""
from __future__ import annotations

import io
import numbers
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import pydicom
from PIL import Image, ImageCms, ImageDraw, ImageFont
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from .codecs import PixelDescription

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/jp2")
WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
ANNOTATIONS = ("patient", "technique")
ICC_PROFILES = ("no", "yes", "srgb")   # PS3.18 also names adobergb and rommrgb: we render in sRGB only
MAX_SIDE = 8192                         # of a rendered image (viewport, WADO-URI rows and columns)…
MAX_RENDERED_PIXELS = 4096 * 4096       # …and its area: what one answer may cost to draw and encode
MAX_ASPECT_RATIO = 10.0                 # a row/column spacing ratio beyond this is taken as damage, not applied


class BadParameter(Exception):
    """A rendering parameter that is malformed or asks for more than an image is drawn with."""


class Unrenderable(Exception):
    """A frame its own data set cannot present: a damaged LUT, a rescale that is no number, a
    description the pixel data contradicts (the sender's, not a fault of ours)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"    # LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.3)


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int
    region: tuple[float, float, float, float] | None = None   # sx, sy, sw, sh in source pixels; sw, sh < 0 flip


@dataclass(frozen=True)
class Rendering:
    """What a rendered or thumbnail request asks for (PS3.18 table 8.3.5-1)."""

    media_type: str = "image/jpeg"
    quality: int = 90
    window: Window | None = None
    viewport: Viewport | None = None
    annotations: tuple[str, ...] = ()
    icc_profile: str = "no"


def parse_rendering(params: dict[str, str], media_type: str = "image/jpeg",
                    default_viewport: Viewport | None = None) -> Rendering:
    """The rendering parameters of a request; BadParameter naming the parameter when one is malformed."""
    quality = 90
    if "quality" in params:
        quality = _number(params["quality"], "quality", int)
        if not 1 <= quality <= 100:
            raise BadParameter("quality must be between 1 and 100")
    window = None
    if "window" in params:
        parts = params["window"].split(",")
        if len(parts) not in (2, 3):
            raise BadParameter("window must be center,width[,function]")
        center, width = _number(parts[0], "window center", float), _number(parts[1], "window width", float)
        function = WINDOW_FUNCTIONS.get(parts[2].strip().lower() if len(parts) == 3 else "linear")
        if function is None:
            raise BadParameter(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
        if width < (1 if function == "LINEAR" else 0) or (width == 0):
            raise BadParameter("window width must be at least 1 (linear) or above 0")
        window = Window(center, width, function)
    viewport = default_viewport
    if "viewport" in params:
        parts = params["viewport"].split(",")
        if len(parts) not in (2, 6):
            raise BadParameter("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
        vw, vh = (_number(p, "viewport", int) for p in parts[:2])
        if not (0 < vw <= MAX_SIDE and 0 < vh <= MAX_SIDE):
            raise BadParameter(f"viewport width and height must be between 1 and {MAX_SIDE}")
        if vw * vh > MAX_RENDERED_PIXELS:
            raise BadParameter(f"viewport {vw}x{vh} asks for more than the {MAX_RENDERED_PIXELS} pixels "
                             "an image is rendered with")
        region = tuple(_number(p, "viewport", float) for p in parts[2:]) if len(parts) == 6 else None
        if region is not None and (region[0] < 0 or region[1] < 0 or region[2] == 0 or region[3] == 0):
            raise BadParameter("viewport sx and sy must not be negative, sw and sh not zero")
        viewport = Viewport(vw, vh, region)
    annotations: tuple[str, ...] = ()
    if params.get("annotation"):
        annotations = tuple(a.strip().lower() for a in params["annotation"].split(","))
        if any(a not in ANNOTATIONS for a in annotations):
            raise BadParameter(f"annotation must be a list of {', '.join(ANNOTATIONS)}")
    icc_profile = params.get("iccprofile", "no").lower()
    if icc_profile not in ICC_PROFILES:
        raise BadParameter(f"iccprofile must be one of {', '.join(ICC_PROFILES)}: images are rendered in sRGB")
    return Rendering(media_type, quality, window, viewport, annotations, icc_profile)


def _number(text: str, name: str, kind):
    try:
        value = kind(text.strip())
    except ValueError:   # int() or float() of the peer's text, alone in the try
        raise BadParameter(f"{name} must be a number, not {text[:40]!r}") from None
    if kind is float and not np.isfinite(value):
        raise BadParameter(f"{name} must be a finite number")
    return value


def frame_array(native: bytes, pixels: PixelDescription) -> np.ndarray:
    """A native little endian frame as an array: rows × columns (× 3), bits above Bits Stored
    masked and signed values sign-extended, YCbCr converted to RGB, as pydicom decodes. A
    monochrome frame of whole bytes is viewed in place (pydicom's decoder costs as much as the
    rest of a rendering of it)."""
    if pixels.samples_per_pixel == 1 and pixels.bits_allocated in (8, 16, 32) \
            and pixels.photometric_interpretation.startswith("MONOCHROME"):
        dtype = np.dtype(f"<{'i' if pixels.pixel_representation else 'u'}{pixels.bits_allocated // 8}")
        count = pixels.rows * pixels.columns
        if len(native) >= count * dtype.itemsize:
            return stored_bits(np.frombuffer(native, dtype, count).reshape(pixels.rows, pixels.columns), pixels)
    from pydicom.pixels import get_decoder
    with _of_the_data("the frame does not hold what its description says"):
        array, _ = get_decoder("1.2.840.10008.1.2.1").as_array(
            native, rows=pixels.rows, columns=pixels.columns, samples_per_pixel=pixels.samples_per_pixel,
            bits_allocated=pixels.bits_allocated, bits_stored=pixels.bits_stored,
            pixel_representation=pixels.pixel_representation,
            photometric_interpretation=pixels.photometric_interpretation,
            planar_configuration=pixels.planar_configuration, number_of_frames=1, pixel_keyword="PixelData")
    return array


@contextmanager
def _of_the_data(what: str) -> Iterator[None]:
    """Around one call of pydicom's on the sender's values (a decoder, a LUT): what it raises
    for values it cannot use is the data's (Unrenderable), not a fault of ours."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise Unrenderable(f"{what}: {str(exc)[:200]}") from None


def stored_bits(array: np.ndarray, pixels: PixelDescription) -> np.ndarray:
    """Only Bits Stored of each sample (what lies above is no part of the pixel), sign-extended
    for signed pixels, as pydicom's decoders give them."""
    spare = pixels.bits_allocated - pixels.bits_stored
    if spare <= 0:
        return array
    if pixels.pixel_representation:
        return (array << spare) >> spare
    return array & ((1 << pixels.bits_stored) - 1)


def to_8bit(array: np.ndarray, ds: pydicom.Dataset, photometric: str, window: Window | None) -> np.ndarray:
    """The presentation pipeline: an 8-bit grey or RGB array of one frame."""
    if photometric == "PALETTE COLOR":
        with _of_the_data("the palette colour lookup tables cannot be applied"):
            rgb = apply_color_lut(array, ds)
        return _scale_to_8bit(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if array.ndim == 3:   # RGB (YCbCr is converted by the decoder)
        stored = int(ds.get("BitsStored") or array.dtype.itemsize * 8)
        return _scale_to_8bit(array, stored)
    if array.dtype.kind in "iu" and array.size:
        # Integer pixels: run the pipeline once per value in the frame's range, then look
        # every pixel up in that table: one pass over the frame instead of several in floats.
        low, high = int(array.min()), int(array.max())
        if high - low < 1 << 20:
            # Indices in the pixels' own type where they cannot go below 0: no copy of the frame in 64 bits.
            table = _grey(np.arange(low, high + 1, dtype=np.int64), ds, photometric, window)
            if not low:
                return table[array]
            return table[array - np.array(low, array.dtype)] if low > 0 else table[array.astype(np.int32) - low]
    return _grey(array, ds, photometric, window)


def _grey(array: np.ndarray, ds: pydicom.Dataset, photometric: str, window: Window | None) -> np.ndarray:
    for keyword in ("RescaleSlope", "RescaleIntercept"):   # pydicom keeps a damaged DS value as text
        value = ds.get(keyword)
        if value not in (None, "") and not isinstance(value, numbers.Number):
            raise Unrenderable(f"{keyword} {str(value)[:40]!r} is not a number")
    with _of_the_data("the modality LUT cannot be applied"):
        values = apply_modality_lut(array, ds).astype(np.float64)
    if window is None:
        window = dataset_window(ds)
    if window is not None:
        grey = apply_window(values, window)
    elif "VOILUTSequence" in ds:
        with _of_the_data("the VOI LUT cannot be applied"):
            lut = apply_voi_lut(values.astype(np.int64) if np.all(values == np.round(values)) else values, ds,
                                prefer_lut=True)
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        grey = np.clip(np.rint(lut.astype(np.float64) / ((1 << bits) - 1) * 255), 0, 255).astype(np.uint8)
    else:
        low, high = float(values.min()), float(values.max())
        grey = apply_window(values, Window((low + high) / 2, max(high - low, 1e-9), "LINEAR_EXACT"))
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey


def dataset_window(ds: pydicom.Dataset) -> Window | None:
    """The first window the data set names (PS3.3 C.11.2), or None."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    first = (lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v))
    try:
        center, width = first(center), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function not in WINDOW_FUNCTIONS.values() or width <= 0 or (function == "LINEAR" and width < 1):
        return None
    return Window(center, width, function)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 and C.11.2.1.3: values to 0..255."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = np.where(values <= c - w / 2, 0.0,
                       np.where(values > c + w / 2, 255.0, ((values - c) / w + 0.5) * 255.0))
    else:
        low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        out = np.where(values <= low, 0.0,
                       np.where(values > high, 255.0, ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _scale_to_8bit(array: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8:
        return array.astype(np.uint8)
    return (array.astype(np.uint32) >> (bits - 8)).clip(0, 255).astype(np.uint8)


def to_image(grey_or_rgb: np.ndarray, ds: pydicom.Dataset, rendering: Rendering) -> Image.Image:
    """The 8-bit array as an image: square pixels, then the viewport, then annotations."""
    image = Image.fromarray(grey_or_rgb, "RGB" if grey_or_rgb.ndim == 3 else "L")
    image = _square_pixels(image, ds)
    if rendering.viewport is not None:
        image = _viewport(image, rendering.viewport)
    if rendering.annotations:
        image = _annotate(image, ds, rendering)
    return image


def _square_pixels(image: Image.Image, ds: pydicom.Dataset) -> Image.Image:
    """Keep the physical aspect ratio where rows and columns are spaced differently."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    ratio = None
    try:
        if spacing is not None and len(spacing) == 2 and float(spacing[0]) > 0 and float(spacing[1]) > 0:
            ratio = float(spacing[0]) / float(spacing[1])                       # row / column spacing
        elif ds.get("PixelAspectRatio") is not None and len(ds.PixelAspectRatio) == 2:
            ratio = float(ds.PixelAspectRatio[0]) / float(ds.PixelAspectRatio[1])
    except (TypeError, ValueError, ZeroDivisionError):
        ratio = None
    if ratio is None or abs(ratio - 1) < 1e-3 or not 1 / MAX_ASPECT_RATIO <= ratio <= MAX_ASPECT_RATIO:
        return image
    return image.resize((image.width, max(1, round(image.height * ratio))), Image.Resampling.BILINEAR)


def _viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """PS3.18 §8.3.5.1.3: the source region (flipped where its width or height is negative),
    scaled to fit within vw × vh, proportions kept."""
    if viewport.region is not None:
        left, top, right, bottom = region_box(viewport.region, image.width, image.height)
        sw, sh = viewport.region[2:]
        image = image.crop((left, top, right, bottom))
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def region_box(region: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The part of a ``width`` × ``height`` image a viewport region (sx, sy, sw, sh) covers, as a
    crop box; BadParameter when it covers none of it. What lies outside the image is not drawn."""
    sx, sy, sw, sh = region
    left, right = sorted((sx, sx + sw))
    top, bottom = sorted((sy, sy + sh))
    box = (max(0, round(left)), max(0, round(top)), min(width, round(right)), min(height, round(bottom)))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise BadParameter(f"the viewport region {sx:g},{sy:g},{sw:g},{sh:g} lies outside the {width}x{height} image")
    return box


def _annotate(image: Image.Image, ds: pydicom.Dataset, rendering: Rendering) -> Image.Image:
    lines = {"patient": " ".join(str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "PatientBirthDate")),
             "technique": " ".join(str(ds.get(k, "") or "") for k in ("Modality", "SeriesDescription"))}
    window = rendering.window or dataset_window(ds)
    if window is not None:
        lines["technique"] += f"  C {window.center:g} W {window.width:g}"
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, image.height // 32))
    top, bottom = 4, image.height - 4
    for name in rendering.annotations:
        text = lines[name].strip()
        if name == "patient":
            draw.text((4, top), text, fill="white", font=font, stroke_width=1, stroke_fill="black")
        else:
            draw.text((4, bottom), text, fill="white", font=font, stroke_width=1, stroke_fill="black", anchor="ld")
    return image


def animated_gif(images: Iterable[Image.Image], frame_time_ms: float = 100.0) -> Iterator[bytes]:
    """An animated GIF (GIF89a, looping) of these images, written as they come: each frame is
    encoded on its own (by Pillow, as a one-frame GIF) and its image block appended, with its
    palette as a local colour table where it is not the first frame's (the global one: grey frames
    all share it); memory holds one frame, not the animation (Pillow's writer keeps every frame
    until the end)."""
    delay = max(2, round(frame_time_ms / 10))   # hundredths of a second
    shared = None
    for image in images:
        if image.mode == "RGB":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE)
        single = io.BytesIO()
        image.save(single, "GIF", optimize=False)   # grey frames keep the identity palette, so they share it
        width, height, palette, interlaced, block = _gif_image(single.getvalue())
        palette = palette.ljust(768, b"\0")   # full tables: readers mix sizes up across frames
        if shared is None:
            shared = palette
            yield (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x87, 0, 0) + shared
                   + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")   # loop for ever
        local = b"" if palette == shared else palette
        yield (b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"      # graphic control: delay
               + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, (0x87 if local else 0) | interlaced)
               + local + block)
    yield b"\x3b"


def _gif_image(data: bytes) -> tuple[int, int, bytes, int, bytes]:
    """(width, height, colour table, interlace flag, LZW code size and data sub-blocks) of a one-frame GIF."""
    width, height, packed = struct.unpack("<HHB", data[6:11])
    position = 13
    palette = b""
    if packed & 0x80:
        palette = data[position:position + 3 * (2 << (packed & 7))]
        position += len(palette)
    while data[position] == 0x21:   # extensions: skipped
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    assert data[position] == 0x2C, "a one-frame GIF has an image descriptor"
    local = data[position + 9]
    position += 10
    if local & 0x80:
        palette = data[position:position + 3 * (2 << (local & 7))]
        position += 3 * (2 << (local & 7))
    end = position + 1
    while data[end]:
        end += data[end] + 1
    return width, height, palette, local & 0x40, data[position:end + 1]


def encode_images(images: Sequence[Image.Image], rendering: Rendering, frame_time_ms: float = 100.0) -> bytes:
    """JPEG, PNG, JPEG 2000 (a JP2 file) or GIF bytes of one image, or of several as an animated GIF."""
    out = io.BytesIO()
    icc = _icc_profile(rendering.icc_profile)
    extra = {"icc_profile": icc} if icc else {}
    if rendering.media_type == "image/gif":
        return b"".join(animated_gif(images, frame_time_ms)) if len(images) > 1 else \
            _single_gif(images[0])
    elif rendering.media_type == "image/png":
        images[0].save(out, "PNG", **extra)
    elif rendering.media_type == "image/jp2":
        images[0].save(out, "JPEG2000", **_jp2_options(rendering.quality))
    else:
        images[0].save(out, "JPEG", quality=rendering.quality, **extra)
    return out.getvalue()


def _jp2_options(quality: int) -> dict:
    """JPEG 2000 (OpenJPEG, through Pillow) in its JP2 file format: reversible at quality 100,
    else irreversible at a compression ratio that grows as the quality falls (90: 6:1, 50: 26:1)."""
    if quality >= 100:
        return {"no_jp2": False}
    return {"no_jp2": False, "irreversible": True, "quality_mode": "rates", "quality_layers": [(100 - quality) / 2 + 1]}


def _single_gif(image: Image.Image) -> bytes:
    out = io.BytesIO()
    (image.convert("P", palette=Image.Palette.ADAPTIVE) if image.mode == "RGB" else image).save(out, "GIF")
    return out.getvalue()


def _icc_profile(name: str) -> bytes | None:
    """The sRGB profile, the colour space we render in, for ``yes`` and ``srgb``."""
    if name == "no":
        return None
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
