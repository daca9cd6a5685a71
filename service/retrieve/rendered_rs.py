"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5).

``…/rendered`` at study, series, instance and frames level: every image instance of a
study or series, one part each (a multi-frame instance's first frame), or the frames
asked for; ``…/thumbnail`` at the same levels: one small image of a representative
instance (the middle one of a series; of a study, of its first series). JPEG by
default, PNG, JPEG 2000 or GIF (animated over the frames of a multi-frame instance) when
asked. An encapsulated document's instance renders as the document (service.access.documents),
a structured report's as a readable page, text or PDF (service.access.reports).
Rendering follows transcode.render; answers carry an ETag made from the instances'
contents and the parameters, and thumbnails are kept in a small per-process cache.
With ``anonymize=true``, images the profile cannot make safe are refused and annotations
are drawn from the anonymised copy (service.access.deidentify).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Sequence

import pydicom
from flask import Response, current_app, request

from storage import StoredInstance
from storage.uids import is_valid_uid
from transcode import PixelDescription
from transcode.cda import NotCda, cda_html
from transcode.presentation import GSPS_CLASS, NotApplicable
from transcode.render import RENDERED_MEDIA_TYPES, BadParameter, Rendering, Viewport, parse_rendering

from ..access.documents import DocumentTooLarge, NoDocument, is_document, locate
from ..access.reports import is_report, render_report, rendered_link, report_media_type, text_encoding
from ..access.frames import FrameReader
from ..access.header import stored_header
from ..access.rendering import (
    LazyImage, check_cost, frame_groups, image_instances, presented_image, rendered_frames, representative,
)
from ..access.video import frames_video, is_video, remuxed_mp4
from ..access.video import locate as locate_video
from ..content_policy import READABLE_PAGE_POLICY, as_sent
from ..errors import BadRequest, NotAcceptable, NotFound, PayloadTooLarge
from ..wire import multipart
from ..wire.media import MULTIPART_RELATED, MediaType
from ..web import (
    accepted, anonymize_seed, archive, check_range, held_or_relayed, link_root, multipart_response, parse_frame_list,
    require_uids, transcode_limits, warning,
)
from .bulkdata_rs import Value, single_part

THUMBNAIL = Viewport(128, 128)


def rendered(study: str, series: str | None = None, instance: str | None = None,
             frames: str | None = None) -> Response:
    return render_resource(study, series, instance, frames, thumbnail=False)


def thumbnail(study: str, series: str | None = None, instance: str | None = None,
              frames: str | None = None) -> Response:
    return render_resource(study, series, instance, frames, thumbnail=True)


def render_resource(study: str, series: str | None, instance: str | None, frames: str | None,
                    thumbnail: bool) -> Response:
    require_uids(study=study, series=series, instance=instance)
    seed = anonymize_seed(study, request.args.get("anonymize"))
    numbers = parse_frame_list(frames) if frames is not None else None
    found, relayed = held_or_relayed(study, series, instance, anonymized=seed is not None)
    if relayed is not None:
        return relayed
    if instance is not None and frames is None and not thumbnail and is_document(found[0]):
        return _document(found[0], seed is not None)
    if instance is not None and frames is None and not thumbnail and is_report(found[0]):
        return _report(found[0], seed is not None)
    if instance is not None and frames is None and not thumbnail and found[0].sop_class_uid == GSPS_CLASS:
        return _presentation(found[0], seed is not None)
    if instance is not None and frames is None and not thumbnail and wants_video(accepted(), found[0]):
        return _video(found[0], seed)
    several = not thumbnail and (instance is None or (numbers is not None and len(numbers) > 1))
    media_type, as_multipart = negotiate(accepted(), several)
    try:
        rendering = parse_rendering(request.args.to_dict(), media_type, THUMBNAIL if thumbnail else None)
    except BadParameter as exc:
        raise BadRequest(str(exc)) from None
    images, refused = (representative if thumbnail else image_instances)(archive(), found, seed)
    if not images and refused:
        raise NotAcceptable(f"the image cannot be rendered anonymised: {refused[0]}")
    if not images:
        raise NotFound("there is no image to render here")
    for stored, pixels in images:
        if numbers is not None:
            check_range(numbers, pixels.number_of_frames)
        if not is_video(stored):   # a video's frame is ffmpeg's work, bounded by its own limits
            check_cost(pixels, numbers, rendering, several, transcode_limits())
    tag = _etag(images, numbers, rendering, as_multipart, thumbnail, seed)
    if (unchanged := _not_modified(tag)) is not None:
        return unchanged
    if as_multipart:
        limits = transcode_limits()
        bodies: list = [LazyImage(archive(), limits, stored, wanted, rendering, seed)
                        for stored, pixels in images for wanted in frame_groups(pixels, numbers, rendering, True)]
        bodies[0] = bodies[0].make(before_answer=True)   # an image that cannot be rendered is still a 406
        parts = (multipart.Part({"Content-Type": media_type}, body) for body in bodies)
        response = multipart_response(parts, media_type, status=206 if refused else 200)
        if refused:
            response.headers["Warning"] = warning(f"{len(refused)} images were left out: they cannot be "
                                                  f"rendered anonymised ({refused[0]})")
    else:
        stored, pixels = images[0]
        [wanted] = frame_groups(pixels, numbers or ([1] if thumbnail else None), rendering, False)
        cache = current_app.extensions["thumbnails"]
        body = cache.get(tag) if thumbnail else None
        if body is None:
            body = LazyImage(archive(), transcode_limits(), stored, wanted, rendering, seed).make(before_answer=True)
            if thumbnail:   # one frame: small, and kept
                body = b"".join(body)
                cache.put(tag, body)
        response = Response(body, content_type=media_type, direct_passthrough=not isinstance(body, bytes))
    return _cached(response, tag)


def _document(stored: StoredInstance, anonymized: bool) -> Response:
    """An encapsulated document rendered: the document itself, byte for byte, with one byte range
    when asked; as its own media type when that is a passive one, else as an attachment of
    application/octet-stream (service.content_policy); 406 anonymised (no profile reaches inside
    a PDF)."""
    if anonymized:
        raise NotAcceptable("an encapsulated document cannot be sent anonymised: the profile cannot reach its content")
    try:
        document = locate(archive(), stored, transcode_limits().max_bytes)
    except NoDocument:
        raise NotFound("the instance holds no encapsulated document") from None
    except DocumentTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    kind = document.media_type
    sent, headers = as_sent(kind, stored.sop_instance_uid)
    acceptable = accepted()
    value = (Value(document.data) if document.data is not None else
             Value(archive=archive(), stored=stored, offset=document.offset, size=document.length))
    for media in acceptable:
        if kind == "text/xml" and media.type == "text/html":   # a CDA made readable
            return _cda_page(stored, value, media.param("charset"))
        if media.type in (kind, sent, "*/*", kind.split("/")[0] + "/*"):
            break
    else:
        if acceptable:
            raise NotAcceptable(f"this instance renders as {kind}, its encapsulated document"
                                + (", or text/html" if kind == "text/xml" else ""))
    response = single_part(value, sent)
    response.headers.update(headers)
    return _cached(response, stored.sha256[:32])


MAX_PRESENTED = 64   # images of one presentation state rendered in one answer


def _presentation(stored: StoredInstance, anonymized: bool) -> Response:
    """A presentation state's rendered form (PS3.18 §10.4.1.1.3): the images it references as it
    shows them; one image, or several as multipart/related."""
    if anonymized:
        raise NotAcceptable("a presentation state is not rendered anonymised: its annotations are free text")
    state = stored_header(archive(), stored)
    references = [(str(series.get("SeriesInstanceUID", "")), str(image.get("ReferencedSOPInstanceUID", "")),
                   image.get("ReferencedFrameNumber"))
                  for series in state.get("ReferencedSeriesSequence") or []
                  for image in series.get("ReferencedImageSequence") or []]
    if len(references) > MAX_PRESENTED:
        raise PayloadTooLarge(f"the presentation state references {len(references)} images, more than the "
                              f"{MAX_PRESENTED} rendered in one answer")
    readers = []   # the grey images it references that are here, each with its (first) referenced frame
    for series_uid, image_uid, frames in references:
        if not (is_valid_uid(series_uid) and is_valid_uid(image_uid)):
            continue
        for image in archive().instances(stored.study_uid, series_uid, image_uid):
            reader = FrameReader.of(archive(), image)
            if reader is None or reader.pixels.samples_per_pixel != 1:
                continue
            first = frames[0] if isinstance(frames, (list, pydicom.multival.MultiValue)) else frames
            number = first if isinstance(first, int) and 1 <= first <= reader.pixels.number_of_frames else 1
            readers.append((reader, number))
    if not readers:
        raise NotFound("none of the grey images the presentation state references is in the study")
    media_type, as_multipart = negotiate(accepted(), len(readers) > 1)
    try:
        rendering = parse_rendering(request.args.to_dict(), media_type)
    except BadParameter as exc:
        raise BadRequest(str(exc)) from None
    limits = transcode_limits()
    try:   # the first now, so that what cannot be drawn is a 406; the others as the answer reaches them
        first = presented_image(*readers[0], state, rendering, limits)
    except NotApplicable as exc:
        raise NotAcceptable(f"the presentation state cannot be applied: {exc}") from None
    if not as_multipart:
        return Response(first, content_type=media_type)

    def parts():
        yield multipart.Part({"Content-Type": media_type}, [first])
        for reader, number in readers[1:]:
            yield multipart.Part({"Content-Type": media_type},
                                 [presented_image(reader, number, state, rendering, limits, before_answer=False)])
    return multipart_response(parts(), media_type)


CDA_MAX_BYTES = 16 << 20   # a CDA document read to be made readable


def _cda_page(stored: StoredInstance, value: Value, asked_charset: str | None) -> Response:
    """An encapsulated CDA document as an HTML page (transcode.cda)."""
    if value.size > CDA_MAX_BYTES:
        raise PayloadTooLarge(f"the CDA document is {value.size} bytes, more than the {CDA_MAX_BYTES} made readable")
    charset = _charset(asked_charset)
    data = value.data if value.archive is None else value.archive.read(stored, value.offset, value.size)
    try:
        page = cda_html(data, charset)
    except NotCda as exc:
        raise NotAcceptable(f"the document cannot be made readable: {exc}; ask for text/xml") from None
    response = Response(page.encode(charset, "xmlcharrefreplace"), content_type=f"text/html; charset={charset}")
    response.headers["Content-Security-Policy"] = READABLE_PAGE_POLICY
    return _cached(response, _digest(stored, "cda", charset))


def _report(stored: StoredInstance, anonymized: bool) -> Response:
    """A structured report rendered for reading (service.access.reports); 406 anonymised, as
    the profile removes the content tree (PS3.15 E.1-1: Content Sequence, X)."""
    if anonymized:
        raise NotAcceptable("a structured report cannot be sent anonymised: the profile removes its content")
    media_type, asked_charset = report_media_type(accepted())
    charset = _charset(asked_charset)
    tag = _digest(stored, media_type, charset)
    if (unchanged := _not_modified(tag)) is not None:
        return unchanged
    rendered = render_report(archive(), stored, media_type, charset, rendered_link(link_root()),
                             transcode_limits())
    response = Response(rendered.body, content_type=rendered.content_type)
    response.headers["Content-Security-Policy"] = READABLE_PAGE_POLICY
    return _cached(response, tag)


VIDEO_TYPES = ("video/mp4", "video/mpeg", "video/mp2t", "video/h264", "video/h265")


def wants_video(accept: list[MediaType], stored: StoredInstance) -> bool:
    """Whether an instance's rendered form is asked for as a video: a video instance unless an
    image type comes first in the Accept list; a multi-frame image when a video type does."""
    for media in accept:
        if media.type in VIDEO_TYPES or media.type == "video/*":
            return True
        if media.type in RENDERED_MEDIA_TYPES or media.type in ("image/*", MULTIPART_RELATED, "multipart/*"):
            return False
    return is_video(stored)


def _video(stored: StoredInstance, seed: str | None) -> Response:
    """A video instance as its stream, in the container it is stored in or remuxed into MP4; a
    multi-frame image's rendered frames encoded as an MP4 at its frame rate. Byte ranges either
    way, so that a browser's <video> seeks. 406 anonymised for a video (no profile reaches into
    its frames), and for what cannot be made. (A multi-frame image as MPEG-2 too.)"""
    acceptable = [m.type for m in accepted()] or ["*/*"]
    limits = transcode_limits()
    if is_video(stored):
        if seed is not None:
            raise NotAcceptable("a video cannot be sent anonymised: the profile cannot reach burnt-in text in its frames")
        found = locate_video(archive(), stored)
        as_stored = found.media_type
        for media_type in acceptable:
            if media_type in (as_stored, "video/*", "*/*"):
                value = (Value(archive=archive(), stored=stored, offset=found.spans[0][0], size=found.size)
                         if len(found.spans) == 1 else
                         Value(frames=[archive().body(stored, o, n) for o, n in found.spans], size=found.size))
                return _cached(single_part(value, as_stored), stored.sha256[:32])
            if media_type == "video/mp4":
                return _sent_file(remuxed_mp4(archive(), stored, limits), "video/mp4", _digest(stored, "mp4"))
        raise NotAcceptable(f"this video is sent as {as_stored} (as stored) or video/mp4")
    made = next((m for m in acceptable if m in ("video/mp4", "video/mpeg", "video/*")), None)
    if made is None:
        raise NotAcceptable("a video of a multi-frame image is made as video/mp4 or video/mpeg")
    made = "video/mp4" if made == "video/*" else made
    try:
        rendering = parse_rendering(request.args.to_dict(), "image/png")
    except BadParameter as exc:
        raise BadRequest(str(exc)) from None
    images, refused = image_instances(archive(), [stored], seed)
    if not images:
        raise NotAcceptable(f"the image cannot be rendered anonymised: {refused[0]}" if refused else
                            "there is no image to make a video of")
    _, pixels = images[0]
    check_cost(pixels, None, replace(rendering, media_type="image/gif"), False, limits)   # every frame, as an animation
    tag = _etag(images, None, rendering, False, False, seed) + made.split("/")[1]
    if (unchanged := _not_modified(tag)) is not None:
        return unchanged
    frames, frame_ms = rendered_frames(archive(), stored, rendering, limits, seed)
    return _sent_file(frames_video(frames, frame_ms, made, limits), made, tag)


def _sent_file(spool, media_type: str, tag: str) -> Response:  # noqa: ANN001 - a spool file, at its end
    """A file made for this request, sent with byte ranges, closed (and so removed) when sent."""
    response = _cached(single_part(Value(file=spool, size=spool.tell()), media_type), tag)
    response.call_on_close(spool.close)
    return response


def _charset(asked: str | None) -> str:
    """The charset of a text answer: the ``charset`` parameter, the Accept entry's (``asked``),
    Accept-Charset's (service.access.reports.text_encoding)."""
    return text_encoding(request.args.get("charset"), asked, request.headers.get("Accept-Charset"))


def _digest(stored: StoredInstance, *form: str) -> str:
    """An ETag for one form of an instance's content."""
    return hashlib.sha256(" ".join((stored.sha256, *form)).encode()).hexdigest()[:32]


def _not_modified(tag: str) -> Response | None:
    if request.if_none_match.contains_weak(tag):
        return Response(status=304, headers={"ETag": f'"{tag}"', "Cache-Control": CACHE_CONTROL})
    return None


def _cached(response: Response, tag: str) -> Response:
    response.headers["ETag"] = f'"{tag}"'
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


# The rendering of given instances never changes (the ETag names their contents), but the
# answers need a key: browsers may keep them, shared caches may not.
CACHE_CONTROL = "private, max-age=86400"


def negotiate(accept: list[MediaType], several: bool) -> tuple[str, bool]:
    """(media type, multipart?) for a rendered resource (PS3.18 §8.7.4, table 8.7.4-1):
    a single image unless the resource holds several, then multipart/related."""
    for media in accept:
        if media.type in RENDERED_MEDIA_TYPES and not several:
            return media.type, False
        if media.type in ("image/*", "*/*"):
            return "image/jpeg", several
        if media.type in (MULTIPART_RELATED, "multipart/*"):
            inner = (media.param("type") or "image/jpeg").lower()
            if inner in RENDERED_MEDIA_TYPES:
                return inner, True
            if inner in ("image/*", "*/*"):
                return "image/jpeg", True
    offered = "multipart/related; type=" if several else ""
    raise NotAcceptable(f"rendered images are sent as {offered}" + ", ".join(RENDERED_MEDIA_TYPES))


def asks_for_rendered(accept: list[MediaType]) -> bool:
    """Whether a plain study, series or instance retrieve asks for rendered images first
    (``multipart/related; type="image/jpeg"``, as the DICOMweb quick-start does)."""
    for media in accept:
        if media.type in (MULTIPART_RELATED, "multipart/*"):
            inner = (media.param("type") or "").lower()
            if inner in RENDERED_MEDIA_TYPES:
                return True
            if inner:
                return False
        elif media.type != "*/*":
            return False
    return False


def _etag(images: Sequence[tuple[StoredInstance, PixelDescription]], numbers, rendering: Rendering,
          as_multipart: bool, thumbnail: bool, seed: str | None) -> str:
    digest = hashlib.sha256(repr((rendering, numbers, as_multipart, thumbnail, seed)).encode())
    for stored, _ in images:
        digest.update(stored.sha256.encode())
    return digest.hexdigest()[:32]


class ThumbnailCache:
    """A small LRU of rendered thumbnails by ETag, bounded in bytes, one per worker process."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key, value: bytes) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

