"""Media types: parsing Content-Type and Accept, and negotiating retrieve representations.

Pure functions (PS3.18 §8.7). Media ranges are split on commas outside quoted
strings, parameters are case-insensitive names with optionally quoted values,
and ranges are ordered by q-value, keeping the client's order among equals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from storage.uids import is_valid_uid
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART_RELATED = "multipart/related"
ANY_TRANSFER_SYNTAX = "*"


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


def parse_media_type(text: str) -> MediaType:
    """Parse one media type or range with parameters; raise ValueError if malformed."""
    head, *raw_params = _split_outside_quotes(text, ";")
    mtype = head.strip().lower()
    major, slash, minor = mtype.partition("/")
    if not slash or not major or not minor or " " in mtype:
        raise ValueError(f"malformed media type {text.strip()!r}")
    params: dict[str, str] = {}
    q = 1.0
    for raw in raw_params:
        if not raw.strip():
            continue
        name, eq, value = raw.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise ValueError(f"malformed parameter {raw.strip()!r} in media type {text.strip()!r}")
        value = _unquote(value)
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                raise ValueError(f"malformed q-value {value!r}") from None
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"q-value {value!r} is outside 0..1")
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


def octet_stream_syntaxes(accept: list[MediaType]) -> list[str]:
    """Transfer syntaxes acceptable for uncompressed frames or bulk data, most preferred first.

    PS3.18 §8.7.3.3: ``multipart/related; type="application/octet-stream"``, with no
    transfer-syntax meaning Explicit VR Little Endian and ``*`` meaning as stored.
    """
    found: list[str] = []
    for media in accept:
        if media.type not in ("*/*", "multipart/*", MULTIPART_RELATED):
            continue
        inner = (media.param("type") or OCTET_STREAM).lower()
        if inner not in (OCTET_STREAM, "application/*", "*/*"):
            continue
        syntax = media.param("transfer-syntax") or EXPLICIT_VR_LITTLE_ENDIAN
        if (syntax == ANY_TRANSFER_SYNTAX or is_valid_uid(syntax)) and syntax not in found:
            found.append(syntax)
    return found


# Media type names before DICOM 2021a, still sent by clients; answers use the new names.
LEGACY_MEDIA_TYPES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


def compressed_frames_acceptable(accept: list[MediaType], media_type: str, syntax: str) -> bool:
    """Whether frames may be sent as stored: ``media_type`` in ``syntax`` (PS3.18 §8.7.3.5).

    Accepted when a range names the media type (single or as a multipart ``type``) with no
    transfer-syntax or this one, or asks for anything as stored (``transfer-syntax=*``,
    as viewers send it even with ``type=application/octet-stream``), or is ``*/*``.
    """
    for media in accept:
        if media.type == "*/*":
            return True
        wanted, syntax_asked = media.type, media.param("transfer-syntax")
        if media.type in (MULTIPART_RELATED, "multipart/*"):
            wanted = (media.param("type") or "*/*").lower()
        wanted = LEGACY_MEDIA_TYPES.get(wanted, wanted)
        if syntax_asked == ANY_TRANSFER_SYNTAX:
            return True
        if wanted in (media_type, "*/*", f"{media_type.split('/')[0]}/*") and syntax_asked in (None, syntax):
            return True
    return False
