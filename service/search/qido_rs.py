"""QIDO-RS search: studies, series and instances, at every level (PS3.18 §10.6)."""
from __future__ import annotations

from dataclasses import replace

import orjson
from flask import Response, request

from ..facade.upstreams import merge_by_uid
from ..wire import multipart, urls
from ..wire.dicom_xml import json_to_xml
from ..wire.media import DICOM_JSON, DICOM_XML
from .qido_params import max_offset, parse_query
from .qido_response import ResultFormat, without_empty_omitted
from ..web import archive, base_url, facade, multipart_response, require_uids, settings, wants_xml, warning
from ..wire.tags import KEY

TRUNCATED = ("the number of results exceeded the maximum supported by the server; "
             "additional results can be requested with offset")


def search_patients() -> Response:
    """Patient-level search, as dcm4chee and the O3-DPACS statement offer (not part of PS3.18)."""
    return _search("patient", {})


def search_studies() -> Response:
    return _search("study", {})


def search_series(study: str | None = None) -> Response:
    require_uids(study=study)
    return _search("series", {"StudyInstanceUID": study} if study else {})


def search_instances(study: str | None = None, series: str | None = None) -> Response:
    require_uids(study=study, series=series)
    scoped = {k: v for k, v in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)) if v}
    return _search("instance", scoped)


_KEY = {"patient": KEY.PatientID, "study": KEY.StudyInstanceUID, "series": KEY.SeriesInstanceUID,
        "instance": KEY.SOPInstanceUID}


def _with_upstreams(results: list[dict], level: str, query) -> tuple[list[dict], bool, list[str]]:
    """The local results and the upstreams', merged by UID (local first), ordered by it and
    paged together; upstream RetrieveURLs made to name this server (PS3.18 §10.6.3.3)."""
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("limit", "offset")]
    params += [("limit", str(query.offset + query.limit)), ("offset", "0")]
    path = request.path[len(settings().url_prefix):]
    answers, failed = facade().search_all(path, params)
    key = _KEY[level]
    ordered, _ = merge_by_uid(results, answers, lambda r: _first(r, key), lambda r: _here(r, level))
    page = ordered[query.offset:query.offset + query.limit]
    return page, len(ordered) > query.offset + query.limit, failed


def _first(result: dict, tag: str) -> str:
    values = result.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _here(result: dict, level: str) -> dict:
    if KEY.RetrieveURL in result and level != "patient":
        study, series, instance = (_first(result, t) or None for t in (KEY.StudyInstanceUID, KEY.SeriesInstanceUID, KEY.SOPInstanceUID))
        url = urls.retrieve_url(base_url(), study, series if level in ("series", "instance") else None,
                                instance if level == "instance" else None)
        result = {**result, KEY.RetrieveURL: {"vr": "UR", "Value": [url]}}
    return without_empty_omitted(result)


def _search(level: str, scoped: dict[str, str]) -> Response:
    as_xml = wants_xml("search results")   # PS3.18 §10.6.3.2
    config = settings()
    max_results = config.qido_max_results
    searching = bool(facade().searching)
    query, warnings = parse_query(level, request.args.items(multi=True), max_results, scoped,
                                  max_offset(config.qido_max_offset, max_results, searching))
    local = replace(query, limit=query.offset + query.limit, offset=0) if searching else query
    rows, more = archive().search(local)
    to_json = ResultFormat(query.returned(), level, base_url())
    results = [to_json(row) for row in rows]
    if searching:
        results, more, failed = _with_upstreams(results, level, query)
        warnings += failed
    if more and "limit" not in request.args:
        warnings.append(TRUNCATED)
    if as_xml:
        response = multipart_response([multipart.Part({"Content-Type": DICOM_XML}, [json_to_xml(r)])
                                       for r in results], DICOM_XML)
    else:
        response = Response(orjson.dumps(results), mimetype=DICOM_JSON)
    for text in warnings:
        response.headers.add("Warning", warning(text))
    return response


