"""Rendering stored images (PS3.18 §8.3.5, through transcode.render): which instances of a
resource are images, what one answer may cost, and each image drawn one frame at a time in a
transcoding slot, an animated GIF's frames as the answer reaches them; a video instance's
frame through ffmpeg (service.access.video)."""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import orjson
import pydicom

from storage import Archive, StoredInstance
from transcode import PixelDescription
from transcode.codecs import CodecError
from transcode.render import (
    MAX_RENDERED_PIXELS, MAX_SIDE, BadParameter, Rendering, Unrenderable, animated_gif, encode_images, frame_array,
    region_box, to_8bit, to_image,
)
from transcode.presentation import NotApplicable, Target, present
from transcode.presentation import check as check_state
from transcode.video import MAX_VIDEO_FRAMES, frame_time_ms

from ..errors import BadRequest, NotAcceptable, NotFound, PayloadTooLarge
from ..limits import TranscodeLimits
from .deidentify import deidentify, refusal_of_model
from .frames import FrameReader
from .header import stored_header
from .video import is_video, video_frame

# Pixels drawn for one animated GIF: its frames stream one at a time, so this bounds the time an
# answer takes (some 6 s here: 33 Mpx took 0.8 s), not its memory.
MAX_ANIMATION_PIXELS = 256 << 20


def check_cost(pixels: PixelDescription, numbers: Sequence[int] | None, rendering: Rendering, several: bool,
               limits: TranscodeLimits) -> None:
    """Refuse, before any work, a rendering beyond the request budget: the frames decoded for one
    image (every frame of an animated GIF) within DICOMWEB_TRANSCODE_MAX_BYTES, an animation's
    pixels within MAX_ANIMATION_PIXELS and its frames within MAX_VIDEO_FRAMES, and a viewport region
    that misses the image (400)."""
    if rendering.viewport is not None and rendering.viewport.region is not None:
        try:
            region_box(rendering.viewport.region, pixels.columns, pixels.rows)
        except BadParameter as exc:
            raise BadRequest(f"viewport: {exc}") from None
    count = 1 if several or rendering.media_type != "image/gif" else len(numbers or ()) or pixels.number_of_frames
    if count > MAX_VIDEO_FRAMES:   # an animation or a video: each frame costs its drawing, however small
        raise PayloadTooLarge(f"an animation or a video is made of at most {MAX_VIDEO_FRAMES} frames, not {count}: "
                              "ask for some of them (…/frames/1,2,3/rendered)")
    limits.check(pixels.frame_length * count, "rendering")
    drawn = rendering.viewport.width * rendering.viewport.height if rendering.viewport else pixels.rows * pixels.columns
    if count > 1 and count * min(drawn, MAX_RENDERED_PIXELS) > MAX_ANIMATION_PIXELS:
        raise PayloadTooLarge(f"an animation of {count} frames of {drawn} pixels is more than the "
                              f"{MAX_ANIMATION_PIXELS} pixels one answer is drawn with; ask for fewer frames "
                              "(…/frames/1,2,3/rendered) or a smaller viewport")


Images = list[tuple[StoredInstance, PixelDescription]]


def image_instances(archive: Archive, found: Sequence[StoredInstance], seed: str | None) -> tuple[Images, list[str]]:
    """The image instances among these, with their pixel descriptions (one catalog read), and,
    when anonymised, why those the profile cannot make safe were left out. An instance declaring
    no frames (NumberOfFrames 0) has no image to render."""
    images, refused = [], []
    for stored, model in zip(found, archive.metadata(found)):
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


def representative(archive: Archive, found: Sequence[StoredInstance], seed: str | None) -> tuple[Images, list[str]]:
    """The image nearest the middle of the first series (a series' own middle for a series), or
    of the study when that series has none: its instances are read outwards from the middle,
    a page at a time, until one is an image."""
    first_series = [stored for stored in found if stored.series_uid == found[0].series_uid]
    middle = len(first_series) // 2
    outwards = sorted(range(len(first_series)), key=lambda i: abs(i - middle))
    refused: list[str] = []
    for start in range(0, len(outwards), 16):
        images, more = image_instances(archive, [first_series[i] for i in outwards[start:start + 16]], seed)
        refused += more
        if images:
            return images[:1], refused
    images, more = image_instances(archive, found, seed)
    return images[:1], refused + more


def frame_groups(pixels: PixelDescription, numbers: Sequence[int] | None, rendering: Rendering,
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


def render(reader: FrameReader, numbers: list[int], rendering: Rendering, limits: TranscodeLimits,
            before_answer: bool, seed: str | None = None) -> Iterable[bytes]:
    """One image of these frames (several: an animated GIF), as chunks: one for a still image; for an animated GIF, its frames
    rendered and written one at a time as the answer reaches them (the first one now, so that
    an image that cannot be rendered is still a 406), each in a transcoding slot of its own."""
    limits.check(reader.cost(1), "rendering")
    with limits.slot(before_answer):
        ds = _annotated_from(reader.dataset(), seed)
        first = _image(reader, numbers[0], ds, rendering)
    if rendering.media_type != "image/gif" or len(numbers) == 1:
        return [encode_images([first], rendering)]

    def frames() -> Iterator:
        yield first
        for number in numbers[1:]:
            with limits.slot(before_answer=False):
                yield _image(reader, number, ds, rendering)

    return animated_gif(frames(), frame_time_ms(lambda keyword: ds.get(keyword)))


def rendered_frames(archive: Archive, stored: StoredInstance, rendering: Rendering, limits: TranscodeLimits,
                    seed: str | None) -> tuple[Iterator, float]:
    """Every frame of an image instance through the presentation pipeline, made one at a time as
    they are taken, and the milliseconds a frame is shown. The caller holds a conversion slot
    while it takes them (a slot a frame inside it would deadlock a worker of one slot)."""
    reader = FrameReader.of(archive, stored)
    if reader is None:
        raise NotFound("the instance has no pixel data")
    limits.check(reader.cost(1), "rendering")
    ds = _annotated_from(reader.dataset(), seed)

    frames = (_image(reader, number, ds, rendering) for number in range(1, reader.pixels.number_of_frames + 1))
    return frames, frame_time_ms(lambda keyword: ds.get(keyword))


def video_still(archive: Archive, stored: StoredInstance, number: int, rendering: Rendering,
                limits: TranscodeLimits, before_answer: bool, seed: str | None = None) -> bytes:
    """Frame ``number`` of a video instance rendered as a still image: decoded by ffmpeg (at most
    the viewport's size, or MAX_SIDE), then sized, annotated (from the anonymised copy, with a
    seed) and encoded like any frame."""
    viewport = rendering.viewport
    largest = max(viewport.width, viewport.height) * 2 if viewport is not None and viewport.region is None else MAX_SIDE
    picture = video_frame(archive, stored, number, largest, limits, before_answer)
    ds = _annotated_from(stored_header(archive, stored), seed)
    return encode_images([to_image(np.asarray(picture), ds, rendering)], rendering)


def _annotated_from(ds: pydicom.Dataset, seed: str | None) -> pydicom.Dataset:
    """The data set annotations are drawn from: what an anonymised copy holds, with a seed."""
    if seed is not None:
        deidentify(ds, seed, pixels=False)
    return ds


def _image(reader: FrameReader, number: int, ds, rendering: Rendering):  # noqa: ANN001
    """One frame through the presentation pipeline, as an 8-bit image."""
    try:
        factor = _shrink_factor(reader.pixels, rendering)
        array, photometric = reader.reduced(number, factor), reader.pixels.photometric_interpretation
        if array is None:
            native, description = reader.native(number)
            array, photometric = frame_array(native, description), description.photometric_interpretation
        return to_image(to_8bit(array, ds, photometric, rendering.window), ds, rendering)
    except (CodecError, Unrenderable) as exc:   # the data's; any other error is ours (a 500)
        raise NotAcceptable(f"the image cannot be rendered: {exc}") from None


def _shrink_factor(pixels: PixelDescription, rendering: Rendering) -> int:
    """By how much a frame may be shrunk before the presentation pipeline and still be drawn at
    twice the viewport's resolution (then resampled as usual): a thumbnail of a 6144² frame
    works on a 256² one. 1 where the whole frame is drawn, or a region of it."""
    viewport = rendering.viewport
    if viewport is None or viewport.region is not None:
        return 1
    return max(1, min(pixels.rows // viewport.height, pixels.columns // viewport.width) // 2)


class LazyImage:
    """One rendered image, made when asked for (in a multipart answer: when the encoder reaches it)."""

    def __init__(self, archive: Archive, limits: TranscodeLimits, stored: StoredInstance, numbers: list[int],
                 rendering: Rendering, seed: str | None) -> None:
        self.archive, self.limits = archive, limits
        self.stored, self.numbers, self.rendering, self.seed = stored, numbers, rendering, seed

    def make(self, before_answer: bool) -> Iterable[bytes]:
        if is_video(self.stored):
            return [video_still(self.archive, self.stored, self.numbers[0], self.rendering, self.limits, before_answer,
                                self.seed)]
        reader = FrameReader.of(self.archive, self.stored)
        if reader is None:
            raise NotFound("the instance has no pixel data")
        return render(reader, self.numbers, self.rendering, self.limits, before_answer, self.seed)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.make(before_answer=False)


def presented_image(reader: FrameReader, number: int, state: pydicom.Dataset, rendering: Rendering,
                    limits: TranscodeLimits, before_answer: bool = True) -> bytes:
    """Frame ``number`` as the Grayscale Softcopy Presentation State ``state`` shows it
    (transcode.presentation), then sized, annotated and encoded as ``rendering`` asks.
    NotApplicable when the state is not one for this image."""
    target = Target(reader.stored.sop_instance_uid, number)
    check_state(state, target)
    check_cost(reader.pixels, [number], rendering, False, limits)
    with limits.slot(before_answer):
        ds = reader.dataset()
        try:
            native, description = reader.native(number)
            picture = present(frame_array(native, description), ds, state, target, rendering.window)
        except NotApplicable as exc:
            raise NotAcceptable(f"the presentation state cannot be applied: {exc}") from None
        except (CodecError, Unrenderable) as exc:
            raise NotAcceptable(f"the image cannot be rendered: {exc}") from None
        return encode_images([to_image(np.asarray(picture), ds, rendering)], rendering)
