"""WADO-RS frames (PS3.18 §10.4.1.1.4).

A frame is read by byte range from the blob store, at the place recorded at
ingest: the span of a native frame, or the fragments of a compressed one. It is
sent as stored, as native pixels, or in any other syntax it fits, as the Accept
list prefers (service.access.frames); one frame never costs reading the whole
instance, except for big endian and deflated instances, converted once per request.
"""
from __future__ import annotations


from flask import Response, request


from ..wire import multipart
from ..errors import NotFound
from ..wire.media import pixel_representations
from ..access.frames import body_size, choose, frame_bodies, not_acceptable, stored_pixels
from ..web import (
    accepted, anonymize_seed, archive, base_url, check_range, multipart_response, parse_frame_list, relayed_or_missing,
    refuse_unless_deidentifiable, require_uids, transcode_limits,
)



def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    require_uids(study=study, series=series, instance=instance)
    seed = anonymize_seed(study, request.args.get("anonymize"))
    numbers = parse_frame_list(frames)
    representations = pixel_representations(accepted())
    held = archive().instance_with_details(study, series, instance)   # one catalog read
    if held is None:
        return relayed_or_missing("instance", anonymized=seed is not None)
    stored, details = held
    known = stored_pixels(archive(), stored, details)
    pixels = known.pixels
    if pixels is None:
        raise NotFound("the instance has no pixel data")
    if seed is not None:   # the profile leaves pixels as they are: frames of an anonymised copy are these
        refuse_unless_deidentifiable(known.model)
    check_range(numbers, pixels.number_of_frames)
    choice = choose(representations, stored.transfer_syntax_uid, pixels)
    if choice is None:
        raise not_acceptable(stored.transfer_syntax_uid, pixels)
    bodies = frame_bodies(archive(), transcode_limits(), stored, known.details, pixels, numbers, choice)
    location = f"{base_url()}/studies/{study}/series/{series}/instances/{instance}/frames/"
    parts = [multipart.Part({"Content-Type": choice.content_type} if seed is not None else   # no original UIDs
                            {"Content-Type": choice.content_type, "Content-Location": f"{location}{n}"}, body,
                            body_size(body))
             for n, body in zip(numbers, bodies)]
    return multipart_response(parts, choice.media_type)
