"""Media types: parsing Content-Type and Accept, and negotiating retrieve representations.

Pure functions (PS3.18 §8.7). Media ranges are split on commas outside quoted
strings, parameters are case-insensitive names with optionally quoted values,
and ranges are ordered by q-value, keeping the client's order among equals.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from storage.uids import is_valid_uid
from transcode.syntaxes import DEFAULT_SYNTAX_OF_MEDIA_TYPE, EXPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART_RELATED = "multipart/related"
ANY_TRANSFER_SYNTAX = "*"


class MalformedMediaType(Exception):
    """A Content-Type, Accept or contentType value that is not a media type (the peer's to mend)."""


@dataclass(frozen=True)
class MediaType:
    type: str                              # "multipart/related", lower case
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def param(self, name: str) -> str | None:
        return self.params.get(name)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    pieces, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


# RFC 9110 §12.4.2 writes 0 to 1 with at most three decimals; what clients send is looser (".2",
# "0.9500"): digits and a point, no sign, exponent, "nan" or "inf".
_QVALUE = re.compile(r"(?=.)[01]?(\.[0-9]*)?")


def parse_media_type(text: str) -> MediaType:
    """Parse one media type or range with parameters; MalformedMediaType if malformed."""
    head, *raw_params = _split_outside_quotes(text, ";")
    mtype = head.strip().lower()
    major, slash, minor = mtype.partition("/")
    if not slash or not major or not minor or " " in mtype:
        raise MalformedMediaType(f"malformed media type {text.strip()[:80]!r}")
    params: dict[str, str] = {}
    q = 1.0
    for raw in raw_params:
        if not raw.strip():
            continue
        name, eq, value = raw.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise MalformedMediaType(f"malformed parameter {raw.strip()[:80]!r} in media type {text.strip()[:80]!r}")
        value = _unquote(value)
        if name == "q":
            if not _QVALUE.fullmatch(value) or value == "." or float(value) > 1:
                raise MalformedMediaType(f"malformed q-value {value[:40]!r}: it is a number from 0 to 1")
            q = float(value)
        else:
            params[name] = value
    return MediaType(mtype, params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """Acceptable media ranges, most preferred first; q=0 ranges are dropped.

    A missing or empty header accepts anything (RFC 9110 §12.5.1).
    """
    if header is None or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(part) for part in _split_outside_quotes(header, ",") if part.strip()]
    ordered = sorted(enumerate(ranges), key=lambda pair: (-pair[1].q, pair[0]))
    return [media for _, media in ordered if media.q > 0]


@dataclass(frozen=True)
class Representation:
    """One acceptable way to send a DICOM instance."""

    multipart: bool
    transfer_syntax: str        # a UID, or "*" for as stored


def instance_representations(accept: list[MediaType]) -> list[Representation]:
    """The DICOM instance representations an Accept list allows, in preference order.

    PS3.18 §8.7.3: without a transfer-syntax parameter the syntax is Explicit VR
    Little Endian; ``transfer-syntax=*`` asks for the stored one. ``*/*`` means
    the default, a multipart/related payload of application/dicom parts.
    """
    found: list[Representation] = []
    for media in accept:
        if media.type in ("*/*", "multipart/*", MULTIPART_RELATED):
            inner = (media.param("type") or DICOM).lower()
            if inner not in (DICOM, "application/*", "*/*"):
                continue
            multipart = True
        elif media.type in (DICOM, "application/*"):
            multipart = False
        else:
            continue
        syntax = media.param("transfer-syntax") or EXPLICIT_VR_LITTLE_ENDIAN
        if syntax != ANY_TRANSFER_SYNTAX and not is_valid_uid(syntax):
            continue
        representation = Representation(multipart, syntax)
        if representation not in found:
            found.append(representation)
    return found


def response_format(accept: list[MediaType], offered: tuple[str, ...]) -> str | None:
    """The first of ``offered`` media types that the Accept list allows, or None."""
    for media in accept:
        for candidate in offered:
            major = candidate.split("/")[0]
            if media.type in (candidate, "*/*", f"{major}/*"):
                return candidate
    return None


OCTET_STREAM = "application/octet-stream"

# Media types a browser shows without running anything of the sender's: what a peer's bytes
# (an encapsulated document, an upstream's answer) may be labelled with on our origin. HTML,
# SVG, XML, JavaScript and whatever is not listed are active, or may be (service.content_policy).
PASSIVE_MEDIA_TYPES = frozenset({
    OCTET_STREAM, "application/pdf", DICOM, DICOM_JSON, "application/json", "text/plain", "multipart/related",
    "model/stl", "model/obj", "model/mtl", "model/x3d-vrml",
    "image/jpeg", "image/png", "image/gif", "image/bmp", "image/tiff", "image/webp", "image/jp2", "image/jpx",
    "image/jls", "image/x-jls", "image/jxl", "image/jphc", "image/dicom-rle", "image/x-dicom-rle",
    "video/mp4", "video/mpeg", "video/mp2t", "video/h264", "video/h265", "video/webm", "video/quicktime",
    "audio/mpeg", "audio/mp4", "audio/wav", "audio/ogg",
})


def passive(media_type: str) -> bool:
    """Whether bytes labelled ``media_type`` (parameters allowed) are shown, never run."""
    return media_type.split(";", 1)[0].strip().lower() in PASSIVE_MEDIA_TYPES


# Media type names before DICOM 2021a, still sent by clients; answers use the new names.
LEGACY_MEDIA_TYPES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


@dataclass(frozen=True)
class PixelRepresentation:
    """One acceptable way to send pixel data (frames, bulk pixel data): a media type and a
    transfer syntax UID; ``*`` as the syntax means as stored, in the media type given or any."""

    media_type: str
    transfer_syntax: str


def pixel_representations(accept: list[MediaType]) -> list[PixelRepresentation]:
    """The pixel data representations an Accept list allows, most preferred first (PS3.18 §8.7.3.3-5).

    ``multipart/related; type=X`` and a bare ``X`` both ask for parts of type X. Without a
    transfer-syntax, a media type means its default syntax (``application/octet-stream``:
    Explicit VR Little Endian, i.e. native pixels; ``image/jpeg``: JPEG Lossless SV1…), and
    ``*/*`` means native pixels too. ``transfer-syntax=*`` asks for the data as stored, as
    viewers send it, even with ``type=application/octet-stream``. A media type paired with a
    syntax of another media type is ignored, as is a malformed UID.
    """
    found: list[PixelRepresentation] = []
    for media in accept:
        if media.type in (MULTIPART_RELATED, "multipart/*"):
            inner = (media.param("type") or OCTET_STREAM).lower()
        else:
            inner = media.type
        inner = LEGACY_MEDIA_TYPES.get(inner, inner)
        syntax = media.param("transfer-syntax")
        if syntax == ANY_TRANSFER_SYNTAX:
            representation = PixelRepresentation(inner if inner.startswith("image/") else "*", ANY_TRANSFER_SYNTAX)
        elif syntax is not None and syntax not in TRANSFER_SYNTAXES:
            continue
        elif inner in ("*/*", "application/*", OCTET_STREAM):
            syntax = syntax or EXPLICIT_VR_LITTLE_ENDIAN
            media_type = TRANSFER_SYNTAXES[syntax].bulk_media_type if TRANSFER_SYNTAXES[syntax].compressed \
                else OCTET_STREAM   # a compressed syntax named with octet-stream: its own media type
            representation = PixelRepresentation(media_type, syntax)
        elif inner in DEFAULT_SYNTAX_OF_MEDIA_TYPE:
            syntax = syntax or DEFAULT_SYNTAX_OF_MEDIA_TYPE[inner]
            if TRANSFER_SYNTAXES[syntax].bulk_media_type != inner:
                continue
            representation = PixelRepresentation(inner, syntax)
        elif inner == "image/*":
            representation = PixelRepresentation(inner, ANY_TRANSFER_SYNTAX)
        else:
            continue
        if representation not in found:
            found.append(representation)
    return found


def octet_stream_acceptable(accept: list[MediaType]) -> bool:
    """Whether bulk data other than pixel data, always sent as ``application/octet-stream``, is acceptable."""
    return any(r.media_type in (OCTET_STREAM, "*") for r in pixel_representations(accept))
