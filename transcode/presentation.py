"""A Grayscale Softcopy Presentation State (PS3.3 A.33.1) applied to the image it references,
as PS3.4 N.2 lays the pipeline out: the state's Modality LUT (or the image's), its Softcopy VOI
LUT for this image and frame, its Presentation LUT (table or shape); the display shutter; its
bitmap overlays (its own or the image's it activates) and graphic and text annotations, in
their layers' colours, in pixel units on the image, in display units on the displayed area;
then the displayed area, and the spatial transformation (flip, then rotation).

Only what is drawn is read, and what is drawn is bounded (MAX_OBJECTS objects, MAX_POINTS
points, MAX_TEXT characters a text): a presentation state is a peer's file like any other.
True Size and Magnify modes and the colour of individual line and text styles are not applied
(docs/conformance.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from .render import MAX_RENDERED_PIXELS, Window, dataset_window, to_8bit

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
MAX_OBJECTS = 10_000
MAX_POINTS = 200_000
MAX_TEXT = 1_000
_MODALITY = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence")


class NotApplicable(Exception):
    """A presentation state that is not one this server applies, or not one for this image."""


@dataclass(frozen=True)
class Target:
    image_uid: str
    frame: int          # 1-based


def _refers(item: pydicom.Dataset, target: Target) -> bool:
    """Whether an item's Referenced Image Sequence names the image (and frame); no sequence: every image."""
    references = item.get("ReferencedImageSequence")
    if not references:
        return True
    for reference in references:
        if str(reference.get("ReferencedSOPInstanceUID", "")) != target.image_uid:
            continue
        frames = reference.get("ReferencedFrameNumber")
        if frames in (None, "") or target.frame in [int(f) for f in (frames if isinstance(frames, (list, pydicom.multival.MultiValue)) else [frames])]:
            return True
    return False


def check(ps: pydicom.Dataset, target: Target) -> None:
    """NotApplicable unless ``ps`` is a GSPS whose series references name the image."""
    if str(ps.get("SOPClassUID", "")) != GSPS_CLASS:
        raise NotApplicable("only Grayscale Softcopy Presentation States are applied")
    for series in ps.get("ReferencedSeriesSequence") or []:
        for image in series.get("ReferencedImageSequence") or []:
            if str(image.get("ReferencedSOPInstanceUID", "")) == target.image_uid:
                return
    raise NotApplicable("the presentation state does not reference this image")


def present(array: np.ndarray, image: pydicom.Dataset, ps: pydicom.Dataset, target: Target,
            window: Window | None = None) -> Image.Image:
    """The image's frame ``array`` (stored values, as transcode.render.frame_array gives them) as
    the presentation state shows it: an RGB image. ``window`` (a request's own) overrides the
    state's VOI."""
    if array.ndim != 2:
        raise NotApplicable("a grayscale presentation state applies to grayscale images only")
    view = pydicom.Dataset()
    source = ps if any(k in ps for k in _MODALITY) else image
    for keyword in _MODALITY:
        if keyword in source:
            setattr(view, keyword, source.get(keyword))
    view.BitsStored = image.get("BitsStored", 16)
    view.PixelRepresentation = image.get("PixelRepresentation", 0)
    for item in ps.get("SoftcopyVOILUTSequence") or []:
        if _refers(item, target):
            for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"):
                if keyword in item:
                    setattr(view, keyword, item.get(keyword))
            break
    grey = to_8bit(array, view, "MONOCHROME2", window or dataset_window(view))
    table = _presentation_lut(ps)
    if table is not None:
        grey = table[grey]
    elif str(ps.get("PresentationLUTShape", "IDENTITY")).upper() == "INVERSE":
        grey = 255 - grey
    picture = Image.fromarray(np.ascontiguousarray(grey), "L").convert("RGB")
    _shutter(picture, ps)
    layers = _layers(ps)
    _overlays(picture, ps, image, layers)
    budget = [MAX_OBJECTS, MAX_POINTS]
    later = _annotations(picture, ps, target, layers, budget, units="PIXEL")
    picture = _displayed_area(picture, ps, target)
    if str(ps.get("ImageHorizontalFlip", "N")).upper() == "Y":
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rotation = ps.get("ImageRotation", 0)
    if isinstance(rotation, int) and rotation % 360 in (90, 180, 270):   # a damaged IS stays text: no rotation
        rotation %= 360   # clockwise, after the flip (PS3.3 C.10.6)
        picture = picture.rotate(-rotation, expand=True)
    for draw in later:   # display units: fractions of the displayed area as shown
        draw(picture)
    return picture


def _presentation_lut(ps: pydicom.Dataset) -> np.ndarray | None:
    """The Presentation LUT Sequence's table (PS3.3 C.11.4) as 256 8-bit P-values for the 8-bit
    VOI output: its entries spread over that range, its values scaled from their bits; None when
    there is none, or it is damaged (then the shape, or identity, applies)."""
    sequence = ps.get("PresentationLUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    try:
        entries, _, bits = (int(v) for v in item.LUTDescriptor)
        data = item.LUTData
    except (AttributeError, TypeError, ValueError):
        return None
    values = np.asarray(data if isinstance(data, (list, pydicom.multival.MultiValue)) else
                        np.frombuffer(data, "<u2") if isinstance(data, bytes) else [data], dtype=np.float64)
    entries = entries or 65536   # 0 means 2^16 (PS3.3 C.11.1.1)
    if len(values) < entries or not 8 <= bits <= 16:
        return None
    positions = np.rint(np.arange(256) * (entries - 1) / 255).astype(int)
    return np.clip(np.rint(values[positions] / ((1 << bits) - 1) * 255), 0, 255).astype(np.uint8)


def _displayed_area(picture: Image.Image, ps: pydicom.Dataset, target: Target) -> Image.Image:
    for item in ps.get("DisplayedAreaSelectionSequence") or []:
        if not _refers(item, target):
            continue
        try:
            left, top = (int(v) for v in item.DisplayedAreaTopLeftHandCorner)
            right, bottom = (int(v) for v in item.DisplayedAreaBottomRightHandCorner)
        except (AttributeError, TypeError, ValueError):
            return picture
        if right < left or bottom < top or (right - left + 1) * (bottom - top + 1) > MAX_RENDERED_PIXELS:
            return picture   # an area beyond what an image is rendered with is damage: the whole image
        return picture.crop((left - 1, top - 1, right, bottom))   # 1-based corners; outside is black
    return picture


def _shutter(picture: Image.Image, ps: pydicom.Dataset) -> None:
    shapes = str(ps.get("ShutterShape", "") or "").upper().split("\\")
    if not shapes or shapes == [""]:
        return
    visible = Image.new("L", picture.size, 0)
    draw = ImageDraw.Draw(visible)
    draw.rectangle((0, 0, picture.width, picture.height), fill=255)
    try:
        if "RECTANGULAR" in shapes:
            mask = Image.new("L", picture.size, 0)
            ImageDraw.Draw(mask).rectangle((int(ps.ShutterLeftVerticalEdge) - 1, int(ps.ShutterUpperHorizontalEdge) - 1,
                                            int(ps.ShutterRightVerticalEdge) - 1, int(ps.ShutterLowerHorizontalEdge) - 1),
                                           fill=255)
            visible = Image.fromarray(np.minimum(np.asarray(visible), np.asarray(mask)))
        if "CIRCULAR" in shapes:
            row, column = (float(v) for v in ps.CenterOfCircularShutter)
            radius = float(ps.RadiusOfCircularShutter)
            mask = Image.new("L", picture.size, 0)
            ImageDraw.Draw(mask).ellipse((column - 1 - radius, row - 1 - radius, column - 1 + radius,
                                          row - 1 + radius), fill=255)
            visible = Image.fromarray(np.minimum(np.asarray(visible), np.asarray(mask)))
        if "POLYGONAL" in shapes:
            vertices = [float(v) for v in ps.VerticesOfThePolygonalShutter][:2 * MAX_POINTS]
            points = [(vertices[i + 1] - 1, vertices[i] - 1) for i in range(0, len(vertices) - 1, 2)]
            mask = Image.new("L", picture.size, 0)
            if len(points) >= 3:
                ImageDraw.Draw(mask).polygon(points, fill=255)
            visible = Image.fromarray(np.minimum(np.asarray(visible), np.asarray(mask)))
    except (AttributeError, TypeError, ValueError):
        return   # a shutter described incompletely is not drawn
    value = ps.get("ShutterPresentationValue")
    grey = round(int(value) / 65535 * 255) if isinstance(value, int) else 0
    picture.paste((grey, grey, grey), (0, 0), Image.eval(visible, lambda v: 255 - v))


MAX_OVERLAY_BITS = 64 << 20


def _overlays(picture: Image.Image, ps: pydicom.Dataset, image: pydicom.Dataset, layers: dict) -> None:
    """The bitmap overlays (Overlay Plane, groups 60xx) the state activates (Overlay Activation
    Layer): its own, else the image's of that group (PS3.3 C.11.7), drawn in the layer's colour at
    their origin (PS3.3 C.9.2: 1-based row and column)."""
    for group in range(0x6000, 0x6020, 2):
        layer = ps.get((group, 0x1001))
        if layer is None:
            continue
        source = ps if (group, 0x3000) in ps else image
        data, rows, columns = source.get((group, 0x3000)), source.get((group, 0x0010)), source.get((group, 0x0011))
        if data is None or rows is None or columns is None:
            continue
        try:
            rows, columns = int(rows.value), int(columns.value)
            origin = source.get((group, 0x0050))
            top, left = (int(v) - 1 for v in origin.value) if origin is not None else (0, 0)
            bits = bytes(data.value)
        except (TypeError, ValueError):
            continue
        if not 0 < rows * columns <= MAX_OVERLAY_BITS or len(bits) * 8 < rows * columns:
            continue
        mask = np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")[:rows * columns].reshape(rows, columns)
        colour = layers.get(str(layer.value).strip(), (255, 255, 0))
        picture.paste(colour, (left, top), Image.fromarray(mask * 255, "L"))


def _layers(ps: pydicom.Dataset) -> dict[str, tuple[int, int, int]]:
    colours = {}
    for layer in ps.get("GraphicLayerSequence") or []:
        name = str(layer.get("GraphicLayer", ""))
        lab = layer.get("GraphicLayerRecommendedDisplayCIELabValue")
        grey = layer.get("GraphicLayerRecommendedDisplayGrayscaleValue")
        if lab is not None and len(lab) == 3:
            colours[name] = lab_to_rgb(*(int(v) for v in lab))
        elif isinstance(grey, int):
            value = round(grey / 65535 * 255)
            colours[name] = (value, value, value)
    return colours


def lab_to_rgb(l_value: int, a_value: int, b_value: int) -> tuple[int, int, int]:
    """A DICOM CIELab triplet (PS3.3 C.10.7.1.1: L* 0–100, a* and b* −128–127, each scaled to
    0–65535) as sRGB, with the D65 white point."""
    lightness = l_value * 100 / 65535
    a, b = a_value * 255 / 65535 - 128, b_value * 255 / 65535 - 128
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def inverse(t: float) -> float:
        return t ** 3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    x, y, z = 0.95047 * inverse(fx), inverse(fy), 1.08883 * inverse(fz)
    linear = (3.2406 * x - 1.5372 * y - 0.4986 * z, -0.9689 * x + 1.8758 * y + 0.0415 * z,
              0.0557 * x - 0.2040 * y + 1.0570 * z)

    def gamma(c: float) -> int:
        c = max(0.0, min(1.0, c))
        return round(255 * (12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055))

    return tuple(gamma(c) for c in linear)


def _annotations(picture: Image.Image, ps: pydicom.Dataset, target: Target, layers: dict, budget: list,
                 units: str) -> list:
    """Draws the annotations in PIXEL units on ``picture`` now; returns drawers for those in
    DISPLAY units, to run on the picture as finally shown."""
    later = []
    for annotation in ps.get("GraphicAnnotationSequence") or []:
        if not _refers(annotation, target):
            continue
        colour = layers.get(str(annotation.get("GraphicLayer", "")), (255, 255, 0))
        for graphic in annotation.get("GraphicObjectSequence") or []:
            if budget[0] <= 0:
                return later
            budget[0] -= 1
            kind = str(graphic.get("GraphicAnnotationUnits", "PIXEL")).upper()
            drawer = _graphic(graphic, colour, budget)
            if drawer is not None:
                (later.append(drawer) if kind == "DISPLAY" else drawer(picture))
        for text in annotation.get("TextObjectSequence") or []:
            if budget[0] <= 0:
                return later
            budget[0] -= 1
            drawer, kind = _text(text, colour)
            if drawer is not None:
                (later.append(drawer) if kind == "DISPLAY" else drawer(picture))
    return later


def _points(values, budget: list) -> list[tuple[float, float]] | None:
    try:
        numbers = [float(v) for v in (values if isinstance(values, (list, pydicom.multival.MultiValue)) else [values])]
    except (TypeError, ValueError):
        return None
    numbers = numbers[:2 * max(0, budget[1])]
    budget[1] -= len(numbers) // 2
    if not all(math.isfinite(n) and abs(n) < 1 << 24 for n in numbers):
        return None
    return [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers) - 1, 2)]   # column, row


def _graphic(graphic: pydicom.Dataset, colour, budget: list):
    points = _points(graphic.get("GraphicData"), budget)
    if not points:
        return None
    kind = str(graphic.get("GraphicType", "POLYLINE")).upper()
    display = str(graphic.get("GraphicAnnotationUnits", "PIXEL")).upper() == "DISPLAY"
    filled = str(graphic.get("GraphicFilled", "N")).upper() == "Y"

    def draw(picture: Image.Image) -> None:
        scale = (picture.width, picture.height) if display else (1, 1)
        at = [(x * scale[0], y * scale[1]) for x, y in points]
        width = max(1, min(picture.size) // 256)
        pen = ImageDraw.Draw(picture)
        if kind == "POINT":
            for x, y in at:
                pen.ellipse((x - 2 * width, y - 2 * width, x + 2 * width, y + 2 * width), fill=colour)
        elif kind == "CIRCLE" and len(at) >= 2:
            (cx, cy), (ex, ey) = at[:2]
            r = math.hypot(ex - cx, ey - cy)
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=width, fill=colour if filled else None)
        elif kind == "ELLIPSE" and len(at) >= 4:   # major axis end points, then minor axis end points
            (x1, y1), (x2, y2), (x3, y3), (x4, y4) = at[:4]
            major, minor = math.hypot(x2 - x1, y2 - y1) / 2, math.hypot(x4 - x3, y4 - y3) / 2
            angle = math.atan2(y2 - y1, x2 - x1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            outline = [(cx + major * math.cos(t) * math.cos(angle) - minor * math.sin(t) * math.sin(angle),
                        cy + major * math.cos(t) * math.sin(angle) + minor * math.sin(t) * math.cos(angle))
                       for t in np.linspace(0, 2 * math.pi, 73)]
            pen.line(outline, fill=colour, width=width)
        elif filled and len(at) >= 3:
            pen.polygon(at, fill=colour, outline=colour)
        else:   # POLYLINE, INTERPOLATED (drawn as its polyline)
            pen.line(at, fill=colour, width=width) if len(at) > 1 else pen.point(at, fill=colour)
    return draw


def _text(text: pydicom.Dataset, colour):
    value = str(text.get("UnformattedTextValue", "") or "")[:MAX_TEXT]
    if not value:
        return None, "PIXEL"
    box = text.get("BoundingBoxTopLeftHandCorner")
    anchor = text.get("AnchorPoint")
    where = box if box is not None else anchor
    kind = str(text.get("BoundingBoxAnnotationUnits" if box is not None else "AnchorPointAnnotationUnits",
                        "PIXEL")).upper()
    try:
        x, y = (float(v) for v in where)
    except (TypeError, ValueError):
        return None, kind
    if not (math.isfinite(x) and math.isfinite(y)):
        return None, kind

    def draw(picture: Image.Image) -> None:
        scale = (picture.width, picture.height) if kind == "DISPLAY" else (1, 1)
        font = ImageFont.load_default(size=max(10, picture.height // 40))
        ImageDraw.Draw(picture).multiline_text((x * scale[0], y * scale[1]), value, fill=colour, font=font,
                                               stroke_width=1, stroke_fill=(0, 0, 0))
    return draw, kind
