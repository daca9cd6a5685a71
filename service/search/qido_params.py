"""Parsing QIDO-RS query parameters into a ``storage.search.Query`` (PS3.18 §8.3.4, §10.6.1.2).

Pure: takes the decoded parameters, returns the query and the Warning texts
for what is accepted but not acted on; raises QueryError for what is wrong.
"""
from __future__ import annotations

import re
from typing import Iterable

from pydicom.datadict import tag_for_keyword

from storage.search import ATTRIBUTES, BY_TAG, DEPTH, LEVELS, Attribute, Filter, Query, QueryError, known_keyword
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
INT32_MAX = (1 << 31) - 1
MAX_LIST_VALUES = 1000    # values one key may list (UIDs, alternatives): each becomes an SQL term
CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}


def _attribute(key: str, level: str, warnings: list[str]) -> Attribute | None:
    """The searchable attribute a key names at ``level``; None (with a warning) when it is a
    DICOM attribute this archive does not search on. Unknown keys are an error."""
    if "." in key:
        warnings.append(f"{key}: matching on sequence attributes is not supported; the key was ignored")
        return None
    keyword = known_keyword(key)
    if keyword is None:
        raise QueryError(f"{key!r} is neither a DICOM attribute keyword nor a tag, nor a QIDO-RS parameter")
    if level == "study" and keyword == "Modality":
        keyword = "ModalitiesInStudy"   # as viewers send it (OHIF); PS3.18 has no Modality at study level
    attribute = ATTRIBUTES.get(keyword) or (BY_TAG.get(int(key, 16)) if _TAG.fullmatch(key) else None)
    if attribute is None:
        warnings.append(f"{keyword} is not supported for matching or return; the key was ignored")
        return None
    if DEPTH[attribute.level] > DEPTH[level]:
        raise QueryError(f"{keyword} belongs to the {attribute.level} level: it cannot be used in a "
                         f"search for {level} results")
    return attribute


def _stored_only(key: str) -> str | None:
    """The tag (8 hex digits) of a DICOM attribute the catalog does not index, for
    includefield: it is returned from the instances' stored metadata."""
    keyword = known_keyword(key) if "." not in key else None
    if keyword is None or keyword in ATTRIBUTES or keyword == "Modality":
        return None
    tag = int(key, 16) if _TAG.fullmatch(key) else tag_for_keyword(keyword)
    return None if tag in BY_TAG else f"{tag:08X}"


def integer(name: str, value: str, minimum: int, maximum: int = INT32_MAX) -> int:
    """A whole-number query parameter; QueryError when it is not one or outside ``minimum``..``maximum``."""
    if len(value) > 20:
        raise QueryError(f"{name} must be an integer from {minimum} to {maximum}, not {value[:24]!r}…")
    try:
        number = int(value)
    except ValueError:   # int() of the peer's text, alone in the try
        raise QueryError(f"{name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise QueryError(f"{name} must be at least {minimum}")
    if number > maximum:
        raise QueryError(f"{name} must be at most {maximum}")
    return number


def max_offset(catalog_max: int, max_results: int, facade: bool) -> int:
    """How far a search may page: a facade merges offset + limit results of every upstream in
    memory, so it pages less far than the catalog alone (10 pages of the largest size)."""
    return min(catalog_max, 10 * max_results) if facade else catalog_max


def parse_query(level: str, params: Iterable[tuple[str, str]], max_results: int,
                scoped: dict[str, str] | None = None, max_offset: int = 100_000) -> tuple[Query, list[str]]:
    """Build the Query for a search at ``level`` from (name, value) pairs.

    ``scoped`` holds the UIDs the URL fixes (``{"StudyInstanceUID": …}``). An offset beyond
    ``max_offset`` is refused: the catalog would read every row before it.
    """
    assert level in LEVELS
    warnings: list[str] = []
    values: dict[str, list[str]] = {}
    include: set[str] = set()
    stored: set[str] = set()
    include_all = fuzzy = False
    limit, offset = max_results, 0
    for name, value in params:
        if name == "limit":
            limit = integer("limit", value, 1, 10 ** 20)   # capped below, with a Warning
        elif name == "offset":
            offset = integer("offset", value, 0, max_offset)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for field in filter(None, (f.strip() for f in value.split(","))):
                if field == "all":
                    include_all = True
                elif level != "patient" and (tag := _stored_only(field)) is not None:
                    stored.add(tag)
                elif (attribute := _attribute(field, level, warnings)) is not None:
                    include.add(attribute.keyword)
        elif name in CONTROL:
            continue   # accept and charset concern the response format, handled by the caller
        else:
            if "\x00" in value:
                raise QueryError(f"the value of {name[:64]} holds a NUL character")
            attribute = _attribute(name, level, warnings)
            if attribute is not None:
                values.setdefault(attribute.keyword, []).append(value)
    if limit > max_results:
        warnings.append(f"limit {limit} exceeds the maximum of {max_results} results per request; "
                        f"at most {max_results} are returned")
        limit = max_results
    filters = [Filter(ATTRIBUTES[k], "\\".join(v)) for k, v in values.items()]
    for f in filters:
        if len(re.split(r"[\\,]", f.value)) > MAX_LIST_VALUES:
            raise QueryError(f"{f.attribute.keyword} lists more than {MAX_LIST_VALUES} values")
    for keyword, uid in (scoped or {}).items():
        filters.append(Filter(ATTRIBUTES[keyword], uid))
    if fuzzy and not any(f.attribute.vr == "PN" and f.value.strip("*") for f in filters):
        warnings.append("fuzzymatching applies to person names only and no person name was matched")
    # A study in the URL fixes its patient too; its series fix the study and patient.
    fixed = {"StudyInstanceUID": {"patient", "study"}, "SeriesInstanceUID": {"patient", "study", "series"}}
    query = Query(level, tuple(filters), fuzzy, frozenset(include), include_all, limit, offset,
                  frozenset().union(*(fixed[k] for k in (scoped or {}))), frozenset(stored))
    return query, warnings
