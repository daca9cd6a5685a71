"""QIDO-RS search over the catalog: a frozen query, translated to SQL (PS3.18 §10.6).

Matching follows PS3.4 C.2.2.2: single value, UID list, wildcards ``*`` and
``?``, DA/TM/DT ranges, and universal matching for an empty value. Query keys
reach SQL only through the ``ATTRIBUTES`` whitelist, values only as bound
parameters. Wildcards become GLOB patterns on SQLite and LIKE patterns on
PostgreSQL, both case-sensitive and both served by the indexes of ``schema``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select, true
from sqlalchemy.engine import Connection

from .dataset import INSTANCE_KEYWORDS, PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS
from .schema import (
    STUDY_PATIENT_NAME, instance_metadata, instances, name_components, patients, person_name_tokens, series, studies,
)
from .uids import is_valid_uid

LEVELS = ("patient", "study", "series", "instance")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_TABLES = {"patient": patients, "study": studies, "series": series, "instance": instances}
DEPTH = {level: depth for depth, level in enumerate(LEVELS)}
_INTEGER_VRS = {"IS", "US", "UL", "SS", "SL"}


class QueryError(Exception):
    """A query the archive cannot run as asked (the message names the parameter)."""


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: int
    vr: str
    level: str             # "patient", "study", "series" or "instance"
    computed: bool = False  # derived from the archive's contents, returned but not stored


def _attribute(keyword: str, level: str, computed: bool = False) -> Attribute:
    tag = tag_for_keyword(keyword)
    return Attribute(keyword, tag, dictionary_VR(tag), level, computed)


ATTRIBUTES: dict[str, Attribute] = {a.keyword: a for a in [
    *(_attribute(k, "patient") for k in PATIENT_KEYWORDS),
    _attribute("NumberOfPatientRelatedStudies", "patient", computed=True),
    _attribute("NumberOfPatientRelatedSeries", "patient", computed=True),
    _attribute("NumberOfPatientRelatedInstances", "patient", computed=True),
    _attribute("StudyInstanceUID", "study"),
    *(_attribute(k, "study") for k in STUDY_KEYWORDS),
    _attribute("ModalitiesInStudy", "study"),
    _attribute("SOPClassesInStudy", "study", computed=True),
    _attribute("NumberOfStudyRelatedSeries", "study"),
    _attribute("NumberOfStudyRelatedInstances", "study"),
    _attribute("SeriesInstanceUID", "series"),
    *(_attribute(k, "series") for k in SERIES_KEYWORDS),
    _attribute("NumberOfSeriesRelatedInstances", "series"),
    _attribute("SOPInstanceUID", "instance"),
    _attribute("SOPClassUID", "instance"),
    *(_attribute(k, "instance") for k in INSTANCE_KEYWORDS),
    _attribute("AvailableTransferSyntaxUID", "instance"),   # the syntax it is stored in
]}
# Attributes kept in a column of another name.
_COLUMN_OF = {"AvailableTransferSyntaxUID": "TransferSyntaxUID"}
BY_TAG = {a.tag: a for a in ATTRIBUTES.values()}

# PS3.18 tables 10.6.3-3, -4 and -5 (the patient attributes of the first are the patient level's):
# returned whatever includefield says.
DEFAULT_RETURN = {
    "patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies",
                "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"),
    "study": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
              "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "series": ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
               "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
               "PerformedProcedureStepStartTime"),
    "instance": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
                 "NumberOfFrames"),
}


@dataclass(frozen=True)
class Filter:
    attribute: Attribute
    value: str


@dataclass(frozen=True)
class Query:
    """A QIDO-RS search: what to match at which level, and what to return."""

    level: str
    filters: tuple[Filter, ...] = ()
    fuzzy: bool = False
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int = 100
    offset: int = 0
    scoped: frozenset[str] = field(default_factory=frozenset)  # levels fixed by the URL ("study", "series")
    stored: frozenset[str] = frozenset()   # tags to return from stored metadata (not indexed)

    def returned(self) -> list[Attribute]:
        """Attributes in every result: the level's defaults, its parents' where the
        URL does not fix them, what was matched and what includefield names."""
        depth = DEPTH[self.level]
        keywords: list[str] = []
        for level in LEVELS[: depth + 1]:
            if level == self.level or level not in self.scoped or self.include_all:
                keywords += DEFAULT_RETURN[level]
            elif level != "patient":
                keywords.append("StudyInstanceUID" if level == "study" else "SeriesInstanceUID")
        if self.include_all:
            keywords += [a.keyword for a in ATTRIBUTES.values() if DEPTH[a.level] <= depth]
        keywords += [f.attribute.keyword for f in self.filters] + sorted(self.include)
        # Computed attributes describe the result rows' own level (a series' count, not its study's).
        seen = dict.fromkeys(k for k in keywords if DEPTH[ATTRIBUTES[k].level] <= depth
                             and (not ATTRIBUTES[k].computed or ATTRIBUTES[k].level == self.level))
        return sorted((ATTRIBUTES[k] for k in seen), key=lambda a: a.tag)


def run(conn: Connection, query: Query, sqlite: bool) -> tuple[list[dict[str, Any]], bool]:
    """Run ``query``; return its page of results and whether more matched beyond it."""
    table = _TABLES[query.level]
    returned = query.returned()
    columns = [_column(a).label(a.keyword) for a in returned if not a.computed]
    # Two steps in one statement: the page's keys first, over only the tables the filters
    # need, then the columns of those rows alone (not of every match before the sort).
    page = select(table.c.pk).select_from(_joined(query.level, _needs_patients(query)))
    for condition in _conditions(query, sqlite):
        page = page.where(condition)
    page = page.order_by(*_order(query)).limit(query.limit + 1).offset(query.offset)
    statement: Select = (select(table.c.pk.label("_pk"), *columns).select_from(_joined(query.level))
                         .where(table.c.pk.in_(page))
                         .order_by(*_order(query)))
    rows = [dict(row._mapping) for row in conn.execute(statement)]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    if any(a.keyword == "ModalitiesInStudy" for a in returned):
        for row in rows:
            row["ModalitiesInStudy"] = row["ModalitiesInStudy"].split("\\") if row["ModalitiesInStudy"] else []
    if any(a.keyword == "SOPClassesInStudy" for a in returned):
        _add_sop_classes(conn, rows)
    if query.level == "patient":
        _add_patient_counts(conn, rows)
    if query.stored:
        _add_stored_attributes(conn, query, rows)
    return rows, more


def count(conn: Connection, query: Query, sqlite: bool) -> int:
    """How many results ``query`` matches in all, whatever its page."""
    table = _TABLES[query.level]
    matched = select(table.c.pk).select_from(_joined(query.level, _needs_patients(query)))
    for condition in _conditions(query, sqlite):
        matched = matched.where(condition)
    return conn.execute(select(func.count()).select_from(matched.subquery())).scalar_one()


def _order(query: Query) -> list[ColumnElement]:
    """Insertion order (the primary key: indexed, stable); inside one study or series,
    the order a viewer shows: series and instance numbers first."""
    order: list[ColumnElement] = []
    if query.level != "study" and "study" in query.scoped:
        order.append(series.c.SeriesNumber.nulls_last())
    if query.level == "instance" and query.scoped:
        order.append(instances.c.InstanceNumber.nulls_last())
    return [*order, _TABLES[query.level].c.pk]


def _needs_patients(query: Query) -> bool:
    """Whether the filters read patient rows. Name matching does not, but for non-ASCII
    values matched against every name group: fuzzy matching reads the token table,
    alphabetic matching the studies' copy of the name."""
    return any(f.attribute.level == "patient" and f.value not in ("", "*")
               and not (f.attribute.vr == "PN" and (query.fuzzy or f.value.isascii()))
               for f in query.filters)


def _joined(level: str, with_patients: bool = True):
    if level == "patient":
        return patients
    joined = studies.join(patients, studies.c.patient_pk == patients.c.pk) if with_patients else studies
    if DEPTH[level] >= DEPTH["series"]:
        joined = joined.join(series, series.c.study_pk == studies.c.pk)
    if DEPTH[level] >= DEPTH["instance"]:
        joined = joined.join(instances, instances.c.series_pk == series.c.pk)
    return joined


def _column(attribute: Attribute) -> ColumnElement:
    return _TABLES[attribute.level].c[_COLUMN_OF.get(attribute.keyword, attribute.keyword)]


# -- matching -----------------------------------------------------------------------

def _conditions(query: Query, sqlite: bool) -> Iterable[ColumnElement]:
    for f in query.filters:
        condition = match(f.attribute, f.value, sqlite, query.fuzzy, query.level)
        if condition is not None:
            yield condition


def match(attribute: Attribute, value: str, sqlite: bool, fuzzy: bool = False,
          level: str = "study") -> ColumnElement | None:
    """The SQL condition for one query key, or None for universal matching (PS3.4 C.2.2.2.3)."""
    if value in ("", "*"):
        return None
    keyword, vr = attribute.keyword, attribute.vr
    # Correlated EXISTS: results are read in primary-key order and stop at the limit,
    # so probing each study's series (index on study_pk, Modality) beats building the full set.
    # Aliases: below study level the outer query reads series (and instances) itself, which
    # the subquery would otherwise correlate with, leaving it no table of its own.
    if keyword == "ModalitiesInStudy":
        any_series = series.alias("any_series")
        return exists().where(any_series.c.study_pk == studies.c.pk,
                              any_of(any_series.c.Modality, value_list(value), sqlite))
    if keyword == "SOPClassesInStudy":
        any_series, any_instance = series.alias("any_series"), instances.alias("any_instance")
        return exists().where(any_series.c.study_pk == studies.c.pk, any_instance.c.series_pk == any_series.c.pk,
                              any_instance.c.SOPClassUID.in_(uid_list(keyword, value)))
    column = _column(attribute)
    if vr == "UI":
        uids = uid_list(keyword, value)
        return column == uids[0] if len(uids) == 1 else column.in_(uids)
    if vr in ("DA", "TM", "DT"):
        return date_time(column, keyword, vr, value)
    if vr == "PN":
        return _person_name(attribute, value, sqlite, fuzzy, level)
    if vr in _INTEGER_VRS:
        try:
            number = int(value) if len(value) <= 12 else None
        except ValueError:
            number = None
        if number is None or not -(1 << 31) <= number < 1 << 31:   # what the catalog's columns hold
            raise QueryError(f"{keyword} must be an integer of at most 32 bits, not {value[:24]!r}")
        return column == number
    return any_of(column, value_list(value), sqlite)


def value_list(value: str) -> list[str]:
    """A value list: backslash-separated (PS3.4), or comma-separated as PS3.18 §8.3.4.1 allows."""
    return [v for v in re.split(r"[\\,]", value) if v]


def uid_list(keyword: str, value: str) -> list[str]:
    uids = value_list(value)
    for uid in uids:
        if not is_valid_uid(uid):
            raise QueryError(f"{keyword}: {uid[:80]!r} is not a valid UID")
    if not uids:
        raise QueryError(f"{keyword}: no UID given")
    return uids


def any_of(column: ColumnElement, values: list[str], sqlite: bool) -> ColumnElement:
    plain = [v for v in values if not _has_wildcard(v)]
    conditions = [wildcard(column, v, sqlite) for v in values if _has_wildcard(v)]
    if plain:
        conditions.append(column == plain[0] if len(plain) == 1 else column.in_(plain))
    if not conditions:   # separators only ("," or "\\"): no value given, a universal match (PS3.4 C.2.2.2.3)
        return true()
    return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def wildcard(column: ColumnElement, pattern: str, sqlite: bool) -> ColumnElement:
    """Case-sensitive ``*``/``?`` matching; the data's own ``%``, ``_`` and ``[`` are literal."""
    if sqlite:
        return column.op("GLOB")(literal(pattern.replace("[", "[[]")))
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


_DATE = {"DA": re.compile(r"\d{8}"), "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
         "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")}


def date_time(column: ColumnElement, keyword: str, vr: str, value: str) -> ColumnElement:
    """Single value or range ``a-b``, ``-b``, ``a-`` (PS3.4 C.2.2.2.5); bounds inclusive.

    Stored TM/DT values may be shorter or longer than the bound (``1015`` and
    ``101530.5``): an upper bound covers every value it is a prefix of.
    """
    def valid(part: str) -> str:
        if not _DATE[vr].fullmatch(part):
            raise QueryError(f"{keyword}: {part[:40]!r} is not a valid {vr} value")
        return part

    if vr == "DT":
        low, sep, high = value.partition("-") if not value.startswith("-") else ("", "-", value[1:])
    else:
        low, sep, high = value.partition("-")
    if not sep:
        return column == valid(value)
    if not low and not high:
        raise QueryError(f"{keyword}: a range needs at least one bound")
    conditions = []
    if low:
        conditions.append(column >= valid(low))
    if high:
        conditions.append(column <= (valid(high) if vr == "DA" else valid(high) + "~"))
    return and_(*conditions)


def name_match(upper: ColumnElement, groups: ColumnElement, value: str, sqlite: bool) -> ColumnElement:
    """PN matching without fuzzy matching, case-insensitive: an ASCII value against the
    upper-cased alphabetic group, any other against every group (kept as ``=group=group=``)."""
    pattern = value.upper()
    if pattern.isascii():
        return wildcard(upper, pattern, sqlite) if _has_wildcard(pattern) else upper == pattern
    return wildcard(groups, f"*={pattern}=*", sqlite)


def known_keyword(key: str) -> str | None:
    """The dictionary keyword a keyword or 8-hex-digit tag key names (a tag the dictionary has
    without a keyword: the tag, upper case), or None for neither."""
    if _TAG.fullmatch(key):
        tag = int(key, 16)
        return keyword_for_tag(tag) or (key.upper() if dictionary_has_tag(tag) else None)
    return key if tag_for_keyword(key) is not None else None


def _person_name(attribute: Attribute, value: str, sqlite: bool, fuzzy: bool,
                 level: str) -> ColumnElement | None:
    """PN matching, case-insensitive. Without fuzzy matching the value is matched
    against the alphabetic group (ASCII values) or against any group; with it,
    every component of the value must begin some component of the name."""
    table = _TABLES[attribute.level]
    pattern = value.upper()
    if fuzzy:
        keyword, owner = attribute.keyword, studies.c.pk
        if attribute.level == "patient":
            # Searches below patient level use the tokens filed against studies: no patient join.
            keyword, owner = ((attribute.keyword, patients.c.pk) if level == "patient"
                              else (STUDY_PATIENT_NAME, studies.c.pk))
        conditions = []
        for token in name_components(pattern.replace("?", "*")):
            prefix = token.split("*", 1)[0]
            if not prefix:
                continue
            tokens = select(person_name_tokens.c.owner_pk).where(
                person_name_tokens.c.keyword == keyword,
                wildcard(person_name_tokens.c.token, prefix + "*", sqlite))
            conditions.append(owner.in_(tokens))
        if not conditions:
            return None   # only wildcards: universal matching
        return and_(*conditions)
    upper = (studies.c.patient_name_upper if attribute.keyword == "PatientName" and level != "patient"
             else table.c[f"{attribute.keyword}_upper"])
    return name_match(upper, table.c[f"{attribute.keyword}_groups"], value, sqlite)


# -- computed attributes ---------------------------------------------------------------


def _add_stored_attributes(conn: Connection, query: Query, rows: list[dict[str, Any]]) -> None:
    """includefield attributes the catalog does not index, as DICOM JSON elements taken from
    the stored metadata of each result's instance (for a study or series, its first one)."""
    by_pk = {row["_pk"]: row for row in rows}
    if query.level == "instance":
        instance_of = {pk: pk for pk in by_pk}
    else:
        owner = series.c.study_pk if query.level == "study" else instances.c.series_pk
        statement = (select(owner, func.min(instances.c.pk))
                     .select_from(instances.join(series, instances.c.series_pk == series.c.pk))
                     .where(owner.in_(list(by_pk))).group_by(owner))
        instance_of = dict(conn.execute(statement).all())
    statement = select(instance_metadata.c.instance_pk, instance_metadata.c.json).where(
        instance_metadata.c.instance_pk.in_(list(instance_of.values())))
    models = {pk: orjson.loads(text) for pk, text in conn.execute(statement)}
    for pk, row in by_pk.items():
        model = models.get(instance_of.get(pk), {})
        row["_stored"] = {tag: model.get(tag) or {"vr": _dictionary_vr(tag)} for tag in query.stored}


def _dictionary_vr(tag: str) -> str:
    vr = dictionary_VR(int(tag, 16))
    return vr.split(" ")[0] if vr else "UN"


def _add_patient_counts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Studies, series and instances of the page's patients, from the studies' stored counts."""
    by_pk = {row["_pk"]: row for row in rows}
    for row in rows:
        row.update(NumberOfPatientRelatedStudies=0, NumberOfPatientRelatedSeries=0,
                   NumberOfPatientRelatedInstances=0)
    statement = (select(studies.c.patient_pk, func.count(), func.sum(studies.c.NumberOfStudyRelatedSeries),
                        func.sum(studies.c.NumberOfStudyRelatedInstances))
                 .where(studies.c.patient_pk.in_(list(by_pk))).group_by(studies.c.patient_pk))
    for pk, n_studies, n_series, n_instances in conn.execute(statement):
        by_pk[pk].update(NumberOfPatientRelatedStudies=n_studies, NumberOfPatientRelatedSeries=int(n_series or 0),
                         NumberOfPatientRelatedInstances=int(n_instances or 0))


def _add_sop_classes(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Fill the SOP classes of the page's studies in one grouped query."""
    if not rows:
        return
    by_pk = {row["_pk"]: row for row in rows}
    for row in rows:
        row["SOPClassesInStudy"] = []
    statement = (select(series.c.study_pk, instances.c.SOPClassUID).distinct()
                 .select_from(series.join(instances, instances.c.series_pk == series.c.pk))
                 .where(series.c.study_pk.in_(list(by_pk))))
    for pk, value in conn.execute(statement):
        by_pk[pk]["SOPClassesInStudy"].append(value)
    for row in rows:
        row["SOPClassesInStudy"].sort()
