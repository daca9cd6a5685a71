"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5).

``…/rendered`` at study, series, instance and frames level: every image instance of a
study or series, one part each (a multi-frame instance's first frame), or the frames
asked for; ``…/thumbnail`` at the same levels: one small image of a representative
instance (the middle one of a series; of a study, of its first series). JPEG by
default, PNG or GIF (animated over the frames of a multi-frame instance) when asked.
Rendering follows transcode.render; answers carry an ETag made from the instances'
contents and the parameters, and thumbnails are kept in a small per-process cache.
With ``anonymize=true``, images the profile cannot make safe are refused and annotations
are drawn from the anonymised copy (service.access.deidentify).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Iterable, Iterator, Sequence

import orjson
from flask import Response, current_app, request

from storage import StoredInstance
from transcode import PixelDescription
from transcode.render import (
    MAX_RENDERED_PIXELS, RENDERED_MEDIA_TYPES, Rendering, Viewport, animated_gif, encode_images, frame_array,
    parse_rendering, region_box, to_8bit, to_image,
)

from ..wire import multipart
from ..access.deidentify import deidentify, refusal_of_model
from ..errors import BadRequest, NotAcceptable, NotFound, PayloadTooLarge
from ..limits import TranscodeLimits
from ..wire.media import MULTIPART_RELATED, MediaType
from ..access.frames import FrameReader
from ..web import (
    accepted, anonymize_seed, archive, check_range, held_or_relayed, multipart_response, parse_frame_list, require_uids,
    transcode_limits, warning,
)

THUMBNAIL = Viewport(128, 128)
# Pixels drawn for one animated GIF: its frames stream one at a time, so this bounds the time an
# answer takes (some 6 s here: 33 Mpx took 0.8 s), not its memory.
MAX_ANIMATION_PIXELS = 256 << 20


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
    several = not thumbnail and (instance is None or (numbers is not None and len(numbers) > 1))
    media_type, as_multipart = negotiate(accepted(), several)
    try:
        rendering = parse_rendering(request.args.to_dict(), media_type, THUMBNAIL if thumbnail else None)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    images, refused = _representative(found, seed) if thumbnail else _images(found, seed)
    if not images and refused:
        raise NotAcceptable(f"the image cannot be rendered anonymised: {refused[0]}")
    if not images:
        raise NotFound("there is no image to render here")
    for _, pixels in images:
        if numbers is not None:
            check_range(numbers, pixels.number_of_frames)
        check_cost(pixels, numbers, rendering, several, transcode_limits())
    tag = _etag(images, numbers, rendering, as_multipart, thumbnail, seed)
    if request.if_none_match.contains_weak(tag):
        return Response(status=304, headers={"ETag": f'"{tag}"', "Cache-Control": CACHE_CONTROL})
    if as_multipart:
        bodies: list = [_Lazy(stored, wanted, rendering, seed)
                        for stored, pixels in images for wanted in _frame_groups(pixels, numbers, rendering, True)]
        bodies[0] = bodies[0].make(before_answer=True)   # an image that cannot be rendered is still a 406
        parts = (multipart.Part({"Content-Type": media_type}, body) for body in bodies)
        response = multipart_response(parts, media_type, status=206 if refused else 200)
        if refused:
            response.headers["Warning"] = warning(f"{len(refused)} images were left out: they cannot be "
                                                  f"rendered anonymised ({refused[0]})")
    else:
        stored, pixels = images[0]
        [wanted] = _frame_groups(pixels, numbers or ([1] if thumbnail else None), rendering, False)
        cache = current_app.extensions["thumbnails"]
        body = cache.get(tag) if thumbnail else None
        if body is None:
            body = _Lazy(stored, wanted, rendering, seed).make(before_answer=True)
            if thumbnail:   # one frame: small, and kept
                body = b"".join(body)
                cache.put(tag, body)
        response = Response(body, content_type=media_type, direct_passthrough=not isinstance(body, bytes))
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


def check_cost(pixels: PixelDescription, numbers: Sequence[int] | None, rendering: Rendering, several: bool,
               limits: TranscodeLimits) -> None:
    """Refuse, before any work, a rendering beyond the request budget: the frames decoded for one
    image (every frame of an animated GIF) within DICOMWEB_TRANSCODE_MAX_BYTES, an animation's
    pixels within MAX_ANIMATION_PIXELS, and a viewport region that misses the image (400)."""
    if rendering.viewport is not None and rendering.viewport.region is not None:
        try:
            region_box(rendering.viewport.region, pixels.columns, pixels.rows)
        except ValueError as exc:
            raise BadRequest(f"viewport: {exc}") from None
    count = 1 if several or rendering.media_type != "image/gif" else len(numbers or ()) or pixels.number_of_frames
    limits.check(pixels.frame_length * count, "rendering")
    drawn = rendering.viewport.width * rendering.viewport.height if rendering.viewport else pixels.rows * pixels.columns
    if count > 1 and count * min(drawn, MAX_RENDERED_PIXELS) > MAX_ANIMATION_PIXELS:
        raise PayloadTooLarge(f"an animation of {count} frames of {drawn} pixels is more than the "
                              f"{MAX_ANIMATION_PIXELS} pixels one answer is drawn with; ask for fewer frames "
                              "(…/frames/1,2,3/rendered) or a smaller viewport")


Images = list[tuple[StoredInstance, PixelDescription]]


def _images(found: Sequence[StoredInstance], seed: str | None) -> tuple[Images, list[str]]:
    """The image instances among these, with their pixel descriptions (one catalog read), and,
    when anonymised, why those the profile cannot make safe were left out. An instance declaring
    no frames (NumberOfFrames 0) has no image to render."""
    images, refused = [], []
    for stored, model in zip(found, archive().metadata(found)):
        model = orjson.loads(model)
        pixels = PixelDescription.from_json(model)
        if pixels is None or pixels.number_of_frames < 1:
            continue
        reason = refusal_of_model(model) if seed is not None else None
        if reason is None:
            images.append((stored, pixels))
        else:
            refused.append(reason)
    return images, refused


def _representative(found: Sequence[StoredInstance], seed: str | None) -> tuple[Images, list[str]]:
    """The image nearest the middle of the first series (a series' own middle for a series), or
    of the study when that series has none: its instances are read outwards from the middle,
    a page at a time, until one is an image."""
    first_series = [stored for stored in found if stored.series_uid == found[0].series_uid]
    middle = len(first_series) // 2
    outwards = sorted(range(len(first_series)), key=lambda i: abs(i - middle))
    refused: list[str] = []
    for start in range(0, len(outwards), 16):
        images, more = _images([first_series[i] for i in outwards[start:start + 16]], seed)
        refused += more
        if images:
            return images[:1], refused
    images, more = _images(found, seed)
    return images[:1], refused + more


def _frame_groups(pixels: PixelDescription, numbers: Sequence[int] | None, rendering: Rendering,
                  as_multipart: bool) -> list[list[int]]:
    """The frames of each image to send: one part a frame in multipart answers; in a single
    image, the first frame asked for, or every frame of an animated GIF."""
    count = pixels.number_of_frames
    wanted = list(numbers) if numbers is not None else None
    if as_multipart:
        return [[n] for n in wanted] if wanted else [[1]]
    if rendering.media_type == "image/gif":
        return [wanted or list(range(1, count + 1))]
    return [[(wanted or [1])[0]]]


def render_now(reader: FrameReader, numbers: list[int], rendering: Rendering) -> Iterable[bytes]:
    """One image of these frames (several: an animated GIF), its first frame made before the answer starts."""
    return _render(reader, numbers, rendering, transcode_limits(), before_answer=True)


def _render(reader: FrameReader, numbers: list[int], rendering: Rendering, limits: TranscodeLimits,
            before_answer: bool, seed: str | None = None) -> Iterable[bytes]:
    """The encoded image, as chunks: one for a still image; for an animated GIF, its frames
    rendered and written one at a time as the answer reaches them (the first one now, so that
    an image that cannot be rendered is still a 406), each in a transcoding slot of its own."""
    limits.check(reader.cost(1), "rendering")
    with limits.slot(before_answer):
        ds = reader.dataset()
        if seed is not None:   # what annotations draw is what an anonymised copy holds
            deidentify(ds, seed, pixels=False)
        first = _image(reader, numbers[0], ds, rendering)
    if rendering.media_type != "image/gif" or len(numbers) == 1:
        return [encode_images([first], rendering)]

    def frames() -> Iterator:
        yield first
        for number in numbers[1:]:
            with limits.slot(before_answer=False):
                yield _image(reader, number, ds, rendering)

    return animated_gif(frames(), float(ds.get("FrameTime") or 100))


def _image(reader: FrameReader, number: int, ds, rendering: Rendering):  # noqa: ANN001
    """One frame through the presentation pipeline, as an 8-bit image."""
    try:
        factor = _shrink_factor(reader.pixels, rendering)
        array, photometric = reader.reduced(number, factor), reader.pixels.photometric_interpretation
        if array is None:
            native, description = reader.native(number)
            array, photometric = frame_array(native, description), description.photometric_interpretation
        return to_image(to_8bit(array, ds, photometric, rendering.window), ds, rendering)
    except ValueError as exc:   # CodecError, or a description the pixels contradict
        raise NotAcceptable(f"the image cannot be rendered: {exc}") from None


def _shrink_factor(pixels: PixelDescription, rendering: Rendering) -> int:
    """By how much a frame may be shrunk before the presentation pipeline and still be drawn at
    twice the viewport's resolution (then resampled as usual): a thumbnail of a 6144² frame
    works on a 256² one. 1 where the whole frame is drawn, or a region of it."""
    viewport = rendering.viewport
    if viewport is None or viewport.region is not None:
        return 1
    return max(1, min(pixels.rows // viewport.height, pixels.columns // viewport.width) // 2)


class _Lazy:
    """One rendered image, made when asked for (in a multipart answer: when the encoder reaches it)."""

    def __init__(self, stored: StoredInstance, numbers: list[int], rendering: Rendering, seed: str | None) -> None:
        self.stored, self.numbers, self.rendering, self.seed = stored, numbers, rendering, seed
        # Taken now: a multipart answer streams after the request's context is gone.
        self.archive, self.limits = archive(), transcode_limits()

    def make(self, before_answer: bool) -> Iterable[bytes]:
        reader = FrameReader.of(self.archive, self.stored)
        if reader is None:
            raise NotFound("the instance has no pixel data")
        return _render(reader, self.numbers, self.rendering, self.limits, before_answer, self.seed)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.make(before_answer=False)


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

