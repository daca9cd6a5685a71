"""Structured reports rendered (transcode.report) for WADO-RS ``…/rendered`` and WADO-URI:
the media type and charset negotiated, the report read from the metadata the archive keeps
of it (DICOM JSON: every text inline), references linked to the rendered form of what they name."""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlencode

import orjson

from storage import Archive, StoredInstance
from storage.uids import is_valid_uid
from transcode.report import Link, as_html, as_pdf, as_text, read_report

from ..errors import BadRequest, NotAcceptable
from ..limits import TranscodeLimits
from ..wire.media import MediaType

REPORT_TYPES = ("text/html", "text/plain", "application/pdf")   # the first is the default
_CHARSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,39}")


SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."   # the SR Storage classes (PS3.4 B.5)


def is_report(stored: StoredInstance) -> bool:
    return stored.sop_class_uid.startswith(SR_CLASS_PREFIX)


@dataclass(frozen=True)
class RenderedReport:
    body: bytes
    content_type: str


def report_media_type(accept: Sequence[MediaType]) -> tuple[str, str | None]:
    """(media type, charset asked in the Accept entry chosen, if any) of a report's rendered
    form: the first of the Accept list it can be; text/html when any will do."""
    if not accept:
        return REPORT_TYPES[0], None
    for media in accept:
        if media.type in REPORT_TYPES:
            return media.type, media.param("charset")
        if media.type in ("*/*", "text/*"):
            return REPORT_TYPES[0], media.param("charset")
    raise NotAcceptable("a structured report renders as " + ", ".join(REPORT_TYPES))


def text_encoding(*asked: str | None) -> str:
    """The first charset named (the ``charset`` query parameter, then the Accept entry's, then
    Accept-Charset's first), checked to be an encoding text can be written in; UTF-8 when none
    is named."""
    for value in asked:
        if not value:
            continue
        name = value.split(",")[0].split(";")[0].strip().strip('"')
        if name == "*":
            continue
        if not _CHARSET.fullmatch(name):   # it is echoed in Content-Type: a token, no more
            raise BadRequest(f"charset {name[:40]!r} is not a character set name")
        if not _writes_text(name.lower()):
            raise NotAcceptable(f"charset {name[:40]!r} is not a character set text is written in here; UTF-8 is")
        return name
    return "utf-8"


# The encodings a browser reads (the WHATWG Encoding Standard's, and US-ASCII and Latin-1 by
# their names), by the names Python's codecs give them: a codec that exists for something else
# (idna, punycode, undefined, unicode_escape…) writes no text a client can read.
_WEB_ENCODINGS = (
    "utf-8", "utf-16", "utf-16le", "utf-16be", "us-ascii", "iso-8859-1", "iso-8859-2", "iso-8859-3", "iso-8859-4",
    "iso-8859-5", "iso-8859-6", "iso-8859-7", "iso-8859-8", "iso-8859-10", "iso-8859-13", "iso-8859-14",
    "iso-8859-15", "iso-8859-16", "ibm866", "koi8-r", "koi8-u", "macintosh", "windows-874", "windows-1250",
    "windows-1251", "windows-1252", "windows-1253", "windows-1254", "windows-1255", "windows-1256",
    "windows-1257", "windows-1258", "x-mac-cyrillic", "gbk", "gb18030", "big5", "euc-jp", "iso-2022-jp",
    "shift_jis", "euc-kr",
)


def _codec_name(label: str) -> str | None:
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


_WRITTEN = frozenset(filter(None, map(_codec_name, _WEB_ENCODINGS)))


def _writes_text(name: str) -> bool:
    return _codec_name(name) in _WRITTEN


def render_report(archive: Archive, stored: StoredInstance, media_type: str, charset: str, link: Link,
                  limits: TranscodeLimits) -> RenderedReport:
    """The report of ``stored`` in ``media_type``; a text answer in ``charset`` (HTML writes
    the characters the charset lacks as character references; plain text cannot, so 406).
    A PDF is laid out in one of the worker's conversion slots: 0.2 ms of CPU an item."""
    report = read_report(orjson.loads(archive.details(stored).metadata), link)
    if media_type == "application/pdf":
        with limits.slot(before_answer=True):
            return RenderedReport(as_pdf(report), "application/pdf")
    if media_type == "text/html":
        return RenderedReport(as_html(report, charset).encode(charset, "xmlcharrefreplace"),
                              f"text/html; charset={charset}")
    try:
        return RenderedReport(as_text(report).encode(charset), f"text/plain; charset={charset}")
    except UnicodeEncodeError:
        raise NotAcceptable(f"the report holds characters {charset} cannot encode; ask for UTF-8") from None


def rendered_link(root: str) -> Link:
    """Links to the WADO-RS rendered resources under ``root`` (a frame's, for a reference to frames)."""
    def link(study: str, series: str, instance: str, frames: tuple[int, ...]) -> str | None:
        if not all(is_valid_uid(uid) for uid in (study, series, instance)):   # the report's word: checked
            return None
        url = f"{root}/studies/{study}/series/{series}/instances/{instance}"
        return f"{url}/frames/{frames[0]}/rendered" if frames else f"{url}/rendered"
    return link


def wado_uri_link(endpoint: str) -> Link:
    """Links to the WADO-URI forms of the references under ``endpoint``."""
    def link(study: str, series: str, instance: str, frames: tuple[int, ...]) -> str | None:
        if not all(is_valid_uid(uid) for uid in (study, series, instance)):
            return None
        query = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": instance}
        if frames:
            query["frameNumber"] = str(frames[0])
        return f"{endpoint}?{urlencode(query)}"
    return link

