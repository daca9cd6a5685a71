"""C-FIND of the Query/Retrieve service (PS3.4 C.4.1) as a QIDO-RS search of the same catalog:
an identifier becomes the parameters QIDO-RS would be given (its valued attributes match, its
empty ones are returned, as ``includefield``), so that one query finds the same instances both
ways; each match becomes a response identifier holding exactly the attributes asked for.

Pure: pydicom data sets in, ``storage.search.Query`` and data sets out.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag

from storage.search import Query, QueryError

from ..search.qido_params import parse_query

# Query/Retrieve Level (0008,0052) → the level of a QIDO-RS search.
LEVELS = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "QueryRetrieveView", "TimezoneOffsetFromUTC"}


class BadIdentifier(Exception):
    """An identifier the query cannot be made from: 0xA900 (it does not match the SOP class)
    or 0xC000 (unable to process), as ``status`` says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Find:
    level: str                   # patient, study, series, instance
    query: Query
    asked: tuple[str, ...]       # the identifier's keywords, in its order: what each answer holds
    unsupported: bool            # an optional key was not matched on (0xFF01 pending statuses)


def find_query(identifier: Dataset, max_results: int) -> Find:
    """The search an identifier asks for; BadIdentifier when it cannot be made."""
    level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")).strip().upper())
    if level is None:
        raise BadIdentifier(0xA900, "Query/Retrieve Level (0008,0052) is not PATIENT, STUDY, SERIES or IMAGE")
    params: list[tuple[str, str]] = []
    asked: list[str] = []
    for element in identifier:
        keyword = element.keyword or f"{element.tag:08X}"
        if keyword in NOT_KEYS or element.tag.is_private or element.tag.group in (0x0000, 0x0002):
            continue
        asked.append(keyword)
        if element.VR == "SQ":
            continue   # sequence matching is not done (QIDO-RS ignores it too): returned empty
        value = text_of(element.value)
        params.append((keyword, value) if value else ("includefield", keyword))
    try:
        query, warnings = parse_query(level, params, max_results)
    except QueryError as exc:
        raise BadIdentifier(0xC000, str(exc)) from None
    return Find(level, query, tuple(asked), bool(warnings) or any(e.VR == "SQ" for e in identifier))


def text_of(value: object) -> str:
    """An element's value as QIDO-RS takes it: DICOM's string form, several values joined by '\\'."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(text_of(v) for v in value)
    return str(value).strip()


def answer(identifier: Dataset, result: dict, find: Find, ae_title: str) -> Dataset:
    """The response identifier of one match: the attributes asked for, each with the match's value
    (empty when the archive has none), the level, who can retrieve it, and UTF-8 as the character set
    (values come from the catalog as Unicode)."""
    found = Dataset.from_json({tag: element for tag, element in result.items() if _keyword(tag) in find.asked})
    response = Dataset()
    response.SpecificCharacterSet = "ISO_IR 192"
    response.QueryRetrieveLevel = identifier.QueryRetrieveLevel
    for keyword in find.asked:
        if keyword in found:
            response[keyword] = found[keyword]
        elif keyword in identifier:
            element = identifier[keyword]
            response.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
    if find.level != "patient":
        response.RetrieveAETitle = ae_title
    return response


def _keyword(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or tag
