"""FHIR R4 ImagingStudy (``application/fhir+json``) from the catalog, for national gateways
that search by FHIR (the MyHealth@EU *Imaging Study* page names FHIR and QIDO-RS).

``GET /fhir/ImagingStudy`` with ``patient`` (a Patient ID, or ``Patient/<id>``),
``patient.identifier`` (``[system|]value``), ``identifier`` (``urn:oid:<Study Instance UID>``,
or an accession number, ``[system|]value``), ``started`` (dates with ``eq``, ``ge``, ``gt``,
``le``, ``lt``; repeated for a range), ``modality`` (``[system|]code``), ``_count``,
``_offset``: a ``searchset`` Bundle with ``total`` and ``self``/``next`` links. ``GET
/fhir/ImagingStudy/{id}``, where the id is the Study Instance UID. The searches run as
QIDO-RS study queries (in a facade, at the upstreams too); each resource lists its series
and their instances (for studies held here), and an ``endpoint`` to this server's WADO-RS,
so a client goes from FHIR to pixels — through the facade for upstream studies.
"""
from __future__ import annotations

import datetime
from urllib.parse import urlencode

from dataclasses import replace

import orjson
from flask import Response, request

from storage.uids import is_valid_uid

from ..facade.upstreams import merge_by_uid
from ..errors import BadRequest, NotFound
from .qido_params import integer, max_offset, parse_query
from ..web import archive, base_url, facade, settings, warning
from ..wire.tags import KEY

FHIR_JSON = "application/fhir+json"
DICOM_CODES = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
SEARCH_PARAMETERS = {"patient", "patient.identifier", "identifier", "started", "modality", "_count", "_offset"}


def search() -> Response:
    unknown = sorted(set(request.args) - SEARCH_PARAMETERS)
    if unknown:
        raise BadRequest(f"unsupported search parameter {unknown[0]!r}; supported: {', '.join(sorted(SEARCH_PARAMETERS))}")
    count = min(integer("_count", request.args.get("_count", "20"), 0), settings().qido_max_results)
    searching = bool(facade().searching)
    offset = integer("_offset", request.args.get("_offset", "0"), 0,
                     max_offset(settings().qido_max_offset, settings().qido_max_results, searching))
    params = _qido_params()
    query, _ = parse_query("study", [*params, ("limit", str(max(count, 1))), ("offset", str(offset))],
                           settings().qido_max_results, max_offset=offset)
    total = archive().count(query)
    rows = archive().search(query)[0] if count else []
    warnings: list[str] = []
    if searching and count:
        rows, total, warnings = _with_upstreams(query, params, total, offset, count)
    entries = [{"fullUrl": f"{_fhir_base()}/ImagingStudy/{row['StudyInstanceUID']}", "resource": _resource(row),
                "search": {"mode": "match"}} for row in rows]
    links = [{"relation": "self", "url": _page_url(offset, count)}]
    if offset + count < total and count:
        links.append({"relation": "next", "url": _page_url(offset + count, count)})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}
    response = Response(orjson.dumps(bundle), content_type=FHIR_JSON)
    for text in warnings:
        response.headers.add("Warning", warning(text))
    return response


_STUDY_KEYWORDS = {getattr(KEY, k): k for k in (
    "StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")}


def _with_upstreams(query, params, total: int, offset: int, count: int):
    """In a facade, the upstreams' studies too: asked at once by QIDO-RS, merged by UID (the
    local one first) and paged with the local ones; ``total`` counts the local matches and
    what the upstreams sent (they are asked for one page's worth past the offset)."""
    upstream_params = [*params, ("limit", str(offset + count)), ("offset", "0"), ("includefield", KEY.StudyDescription)]
    answers, failed = facade().search_all("/studies", upstream_params)
    local = replace(query, limit=offset + count, offset=0)
    ordered, extra = merge_by_uid(archive().search(local)[0], answers, lambda row: row["StudyInstanceUID"], _row)
    return ordered[offset:offset + count], total + extra, failed


def _row(result: dict) -> dict:
    """An upstream's study result as a row of the local catalog."""
    row = {keyword: (result.get(tag, {}).get("Value") or [None])[0] for tag, keyword in _STUDY_KEYWORDS.items()}
    row["ModalitiesInStudy"] = result.get(KEY.ModalitiesInStudy, {}).get("Value") or []
    return row


def read(study: str) -> Response:
    if not is_valid_uid(study):
        raise BadRequest("an ImagingStudy id is a Study Instance UID")
    query, _ = parse_query("study", [("StudyInstanceUID", study)], 1)
    rows = archive().search(query)[0]
    if not rows:
        raise NotFound(f"no ImagingStudy {study}")
    return Response(orjson.dumps(_resource(rows[0])), content_type=FHIR_JSON)


def _value(text: str) -> tuple[str | None, str]:
    system, bar, value = text.partition("|")
    return (system or None, value) if bar else (None, text)


def _qido_params() -> list[tuple[str, str]]:
    params = []
    patient = request.args.get("patient")
    if patient:
        params.append(("PatientID", patient.removeprefix("Patient/")))
    identifier = request.args.get("patient.identifier")
    if identifier:
        system, value = _value(identifier)
        params.append(("PatientID", value))
        if system:
            params.append(("IssuerOfPatientID", system.removeprefix("urn:oid:")))
    identifier = request.args.get("identifier")
    if identifier:
        system, value = _value(identifier)
        if value.startswith("urn:oid:") or system == DICOM_UID_SYSTEM:
            params.append(("StudyInstanceUID", value.removeprefix("urn:oid:")))
        else:
            params.append(("AccessionNumber", value))
    started = request.args.getlist("started")
    if started:
        params.append(("StudyDate", _date_range(started)))
    modality = request.args.get("modality")
    if modality:
        params.append(("ModalitiesInStudy", _value(modality)[1]))
    return params


def _date_range(values: list[str]) -> str:
    """FHIR date comparisons as a DICOM date range (PS3.4 C.2.2.2.5)."""
    low = high = None
    for text in values:
        prefix, date = (text[:2], text[2:]) if text[:2] in ("eq", "ge", "gt", "le", "lt", "ne") else ("eq", text)
        first, last = _date_bounds(date)
        if prefix == "ne":
            raise BadRequest("started: the ne prefix is not supported")
        if prefix in ("eq", "ge"):
            low = max(low or first, first)
        if prefix == "gt":
            if last == datetime.date.max:
                return _NOTHING   # nothing is after the last day there is
            low = max(low or last + datetime.timedelta(1), last + datetime.timedelta(1))
        if prefix in ("eq", "le"):
            high = min(high or last, last)
        if prefix == "lt":
            if first == datetime.date.min:
                return _NOTHING
            high = min(high or first - datetime.timedelta(1), first - datetime.timedelta(1))
    text = lambda d: d.strftime("%Y%m%d") if d else ""  # noqa: E731
    return text(low) if low and low == high else f"{text(low)}-{text(high)}"


_NOTHING = "99991231-00010101"   # a DICOM date range no date is in


def _date_bounds(text: str) -> tuple[datetime.date, datetime.date]:
    """The first and last day a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD, time ignored) covers."""
    try:
        parts = [int(p) for p in text[:10].split("-")]
        if len(parts) == 1:
            return datetime.date(parts[0], 1, 1), datetime.date(parts[0], 12, 31)
        if len(parts) == 2:
            first = datetime.date(parts[0], parts[1], 1)
            if parts[1] == 12:
                return first, datetime.date(parts[0], 12, 31)
            return first, datetime.date(parts[0], parts[1] + 1, 1) - datetime.timedelta(1)
        day = datetime.date(*parts)
        return day, day
    except (ValueError, TypeError):
        raise BadRequest(f"started: {text[:40]!r} is not a FHIR date") from None


def _fhir_base() -> str:
    return base_url().rsplit(settings().url_prefix, 1)[0] + "/fhir" if settings().url_prefix else base_url() + "/fhir"


def _page_url(offset: int, count: int) -> str:
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_offset", "_count")]
    return f"{_fhir_base()}/ImagingStudy?{urlencode([*params, ('_count', count), ('_offset', offset)])}"


def _resource(row: dict) -> dict:
    """One ImagingStudy from a study row, with its series and instances."""
    study = row["StudyInstanceUID"]
    series_query, _ = parse_query("series", [("StudyInstanceUID", study)], 10_000)
    instance_query, _ = parse_query("instance", [("StudyInstanceUID", study)], 1_000_000)
    local = archive()
    instances: dict[str, list[dict]] = {}
    for instance in local.search(instance_query)[0]:
        entry = {"uid": instance["SOPInstanceUID"],
                 "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{instance['SOPClassUID']}"}}
        if instance.get("InstanceNumber") is not None:
            entry["number"] = int(instance["InstanceNumber"])
        instances.setdefault(instance["SeriesInstanceUID"], []).append(entry)
    series = []
    for item in local.search(series_query)[0]:
        entry = {"uid": item["SeriesInstanceUID"],
                 "numberOfInstances": int(item.get("NumberOfSeriesRelatedInstances") or 0),
                 "modality": {"system": DICOM_CODES, "code": item.get("Modality") or "OT"},
                 "instance": instances.get(item["SeriesInstanceUID"], [])}
        if item.get("SeriesNumber") is not None:
            entry["number"] = int(item["SeriesNumber"])
        if item.get("SeriesDescription"):
            entry["description"] = item["SeriesDescription"]
        series.append(entry)
    resource: dict = {
        "resourceType": "ImagingStudy", "id": study, "status": "available",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study}"}],
        "subject": {"identifier": {"value": row.get("PatientID") or ""},
                    "display": _person(row.get("PatientName"))},
        "endpoint": [{"reference": "#wado"}],
        "contained": [{"resourceType": "Endpoint", "id": "wado", "status": "active",
                       "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                          "code": "dicom-wado-rs"},
                       "payloadType": [{"text": "DICOM WADO-RS"}],
                       "payloadMimeType": ["application/dicom"], "address": base_url()}],
        "numberOfSeries": int(row.get("NumberOfStudyRelatedSeries") or len(series)),
        "numberOfInstances": int(row.get("NumberOfStudyRelatedInstances") or 0),
        "modality": [{"system": DICOM_CODES, "code": m} for m in row.get("ModalitiesInStudy") or []],
        "series": series,
    }
    if row.get("AccessionNumber"):
        resource["identifier"].append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                            "code": "ACSN"}]}, "value": row["AccessionNumber"]})
    if row.get("StudyDate"):
        resource["started"] = _fhir_date_time(row["StudyDate"], row.get("StudyTime"))
    if row.get("StudyDescription"):
        resource["description"] = row["StudyDescription"]
    if not resource["subject"]["display"]:
        del resource["subject"]["display"]
    return resource


def _person(value) -> str:
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value or "").replace("^", " ").strip()


def _fhir_date_time(date: str, time: str | None) -> str:
    text = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    if time and len(time) >= 4:
        seconds = time[4:6] or "00"
        return f"{text}T{time[:2]}:{time[2:4]}:{seconds}Z"
    return text
