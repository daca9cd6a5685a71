"""WADO-URI (PS3.18 §9): one object by UIDs in query parameters, for older clients.

``GET …/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`` answers the
instance (``application/dicom``, in ``transferSyntax``, de-identified with
``anonymize=yes``), a rendered image (``image/jpeg`` by default for images,
``image/png``, ``image/gif``: ``rows``, ``columns``, ``region``, ``windowCenter``/
``windowWidth``, ``frameNumber``, ``imageQuality``, ``annotation``, and a presentation state:
``presentationUID`` with ``presentationSeriesUID``) or a structured
report rendered (``text/html`` by default for SR, ``text/plain``, ``application/pdf``;
``charset``). A missing or
contradictory parameter is 400 naming it.
"""
from __future__ import annotations

import math
from dataclasses import replace

from flask import Response, request

from storage.uids import is_valid_uid
from transcode.presentation import NotApplicable
from transcode.render import (
    MAX_RENDERED_PIXELS, MAX_SIDE, RENDERED_MEDIA_TYPES, BadParameter, Viewport, Window, parse_rendering,
)
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN

from ..access.rendering import check_cost, presented_image, render
from ..access import instances
from ..access.header import stored_header
from ..access.reports import REPORT_TYPES, SR_CLASS_PREFIX, render_report, text_encoding, wado_uri_link
from ..content_policy import READABLE_PAGE_POLICY
from ..errors import BadRequest, NotAcceptable, NotFound
from ..wire.media import DICOM, MalformedMediaType, Representation, parse_accept
from ..access.frames import FrameReader
from ..web import anonymize_seed, archive, transcode_limits

IMAGE_ONLY = ("rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber", "imageQuality",
              "annotation")
TEXT_TYPES = REPORT_TYPES


def wado() -> Response:
    args = request.args
    if args.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    uids = {name: args.get(name, "") for name in ("studyUID", "seriesUID", "objectUID")}
    for name, value in uids.items():
        if not value:
            raise BadRequest(f"{name} is missing")
        if not is_valid_uid(value):
            raise BadRequest(f"{name} is not a valid UID")
    found = archive().instances(uids["studyUID"], uids["seriesUID"], uids["objectUID"])
    if not found:
        raise NotFound("no such object in the archive")
    stored = found[0]
    state = _presentation_state(uids["studyUID"], args)
    frames = FrameReader.of(archive(), stored)
    content_type = _content_type(args.get("contentType"), frames is not None, stored.sop_class_uid)
    if state is not None and content_type not in RENDERED_MEDIA_TYPES:
        raise BadRequest("presentationUID applies to rendered images only")
    if content_type == DICOM:
        wrong = [name for name in IMAGE_ONLY if name in args]
        if wrong:
            raise BadRequest(f"{wrong[0]} is not allowed with contentType=application/dicom")
        return _dicom(stored, args.get("transferSyntax", EXPLICIT_VR_LITTLE_ENDIAN), args.get("anonymize"))
    for name in ("transferSyntax", "anonymize"):
        if name in args:
            raise BadRequest(f"{name} is only allowed with contentType=application/dicom")
    if content_type in TEXT_TYPES:
        return _report(stored, content_type, args.get("charset"))
    if frames is None:
        raise NotAcceptable(f"the object is not an image; it is available as {DICOM}")
    return _image(frames, content_type, args, state)


def _presentation_state(study: str, args):  # noqa: ANN202 - a pydicom Dataset, or None
    """The Grayscale Softcopy Presentation State that presentationUID and presentationSeriesUID
    name (PS3.18 §9.1.2.1.8: both or neither), from the image's study."""
    uid, series = args.get("presentationUID"), args.get("presentationSeriesUID")
    if uid is None and series is None:
        return None
    if not uid or not series:
        raise BadRequest("presentationUID and presentationSeriesUID go together")
    for name, value in (("presentationUID", uid), ("presentationSeriesUID", series)):
        if not is_valid_uid(value):
            raise BadRequest(f"{name} is not a valid UID")
    found = archive().instances(study, series, uid)
    if not found:
        raise NotFound("no such presentation state in the study")
    return stored_header(archive(), found[0])


def _content_type(asked: str | None, image: bool, sop_class: str) -> str:
    """The first supported type of the contentType list (PS3.18 §9.1.2.1.4); by default
    image/jpeg for images, text/html for structured reports, else application/dicom."""
    if not asked:
        if image:
            return "image/jpeg"
        return "text/html" if sop_class.startswith(SR_CLASS_PREFIX) else DICOM
    try:
        wanted = [media.type for media in parse_accept(asked)]
    except MalformedMediaType as exc:
        raise BadRequest(f"contentType: {exc}") from None
    for media_type in wanted:
        if media_type == DICOM or (media_type in RENDERED_MEDIA_TYPES and image) \
                or (media_type in TEXT_TYPES and sop_class.startswith(SR_CLASS_PREFIX)):
            return media_type
        if media_type == "*/*":
            return "image/jpeg" if image else DICOM
    raise NotAcceptable(f"contentType {asked[:80]!r} cannot be produced for this object; "
                        f"it is available as {DICOM}" + (", " + ", ".join(RENDERED_MEDIA_TYPES) if image else ""))


def _dicom(stored, syntax: str, anonymize: str | None) -> Response:
    if anonymize not in (None, "yes"):
        raise BadRequest("anonymize must be yes")
    if syntax != "*" and not is_valid_uid(syntax):
        raise BadRequest("transferSyntax is not a valid UID")
    limits = transcode_limits()
    planned = instances.plan([stored], [Representation(False, syntax)], True,
                            lambda some: instances.pixel_descriptions(archive(), some), limits)
    part = replace(planned.parts[0], seed=anonymize_seed(stored.study_uid, anonymize))
    part = instances.convert_now(archive(), part, limits)
    body = instances.body_chunks(archive(), part, limits)
    response = Response(body, content_type=part.content_type, direct_passthrough=True)
    size = instances.part_size(part)
    if size is not None:
        response.content_length = size
    return response


def _image(frames: FrameReader, content_type: str, args, state=None) -> Response:  # noqa: ANN001
    params: dict[str, str] = {}
    if "imageQuality" in args:
        if content_type != "image/jpeg":
            raise BadRequest("imageQuality is only allowed with a lossy contentType (image/jpeg)")
        params["quality"] = args["imageQuality"]
    if args.get("annotation"):
        params["annotation"] = args["annotation"]
    try:
        rendering = parse_rendering(params, content_type)
    except BadParameter as exc:
        raise BadRequest(str(exc).replace("quality", "imageQuality", 1)) from None
    if ("windowCenter" in args) != ("windowWidth" in args):
        raise BadRequest("windowCenter and windowWidth go together")
    if "windowCenter" in args:
        center, width = _float(args, "windowCenter"), _float(args, "windowWidth")
        if width < 1:
            raise BadRequest("windowWidth must be at least 1")
        rendering = replace(rendering, window=Window(center, width))
    rows, columns = _positive(args, "rows", MAX_SIDE), _positive(args, "columns", MAX_SIDE)
    region = None
    if "region" in args:
        try:
            region = [float(v) for v in args["region"].split(",")]
        except ValueError:   # float() of the peer's text, alone in the try
            raise BadRequest("region must be four numbers from 0 to 1") from None
        if len(region) != 4 or not all(0 <= v <= 1 for v in region) or region[0] >= region[2] or region[1] >= region[3]:
            raise BadRequest("region must be x1,y1,x2,y2 with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
    pixels = frames.pixels
    number = _positive(args, "frameNumber") or 1
    if number > pixels.number_of_frames:
        raise BadRequest(f"frameNumber {number} is out of range: the object has {pixels.number_of_frames} frame(s)")
    if region is not None or rows or columns:
        x1, y1, x2, y2 = region or (0, 0, 1, 1)
        source = (x1 * pixels.columns, y1 * pixels.rows, (x2 - x1) * pixels.columns, (y2 - y1) * pixels.rows)
        width = columns or (round(source[2] * rows / source[3]) if rows else round(source[2]))
        height = rows or (round(source[3] * columns / source[2]) if columns else round(source[3]))
        if width * height > MAX_RENDERED_PIXELS or max(width, height) > MAX_SIDE:
            raise BadRequest(f"rows and columns ask for a {width}x{height} image: more than the "
                             f"{MAX_RENDERED_PIXELS} pixels (at most {MAX_SIDE} a side) an image is rendered with")
        rendering = replace(rendering, viewport=Viewport(max(1, width), max(1, height), source))
    if state is not None:
        return _presented(frames, number, state, rendering, content_type)
    animated = content_type == "image/gif" and "frameNumber" not in args
    check_cost(pixels, None if animated else [number], rendering, False, transcode_limits())
    numbers = list(range(1, pixels.number_of_frames + 1)) if animated else [number]
    body = render(frames, numbers, rendering, transcode_limits(), before_answer=True)
    return Response(body, content_type=content_type, direct_passthrough=True)


def _presented(frames: FrameReader, number: int, state, rendering, content_type: str) -> Response:  # noqa: ANN001
    """One frame as the presentation state shows it, then sized as asked."""
    try:
        body = presented_image(frames, number, state, rendering, transcode_limits())
    except NotApplicable as exc:
        raise BadRequest(f"presentationUID: {exc}") from None
    return Response(body, content_type=content_type)


def _positive(args, name: str, maximum: int = 1 << 31) -> int | None:
    if name not in args:
        return None
    try:
        value = int(args[name]) if len(args[name]) <= 12 else maximum + 1
    except ValueError:   # int() of the peer's text, alone in the try
        raise BadRequest(f"{name} must be a whole number") from None
    if value < 1:
        raise BadRequest(f"{name} must be at least 1")
    if value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}")
    return value


def _float(args, name: str) -> float:
    try:
        value = float(args[name])
    except ValueError:   # float() of the peer's text, alone in the try
        raise BadRequest(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number")
    return value


def _report(stored, content_type: str, charset: str | None) -> Response:
    """A structured report rendered as WADO-RS renders it (service.access.reports), its
    references linked to their WADO-URI forms."""
    rendered = render_report(archive(), stored, content_type, text_encoding(charset),
                             wado_uri_link(request.script_root + request.path), transcode_limits())
    response = Response(rendered.body, content_type=rendered.content_type)
    response.headers["Content-Security-Policy"] = READABLE_PAGE_POLICY
    return response
