"""QIDO-RS search: studies, series and instances, at every level (PS3.18 §10.6)."""
from __future__ import annotations

import orjson

from flask import Blueprint, Response, request

from storage.search import QueryError

from . import multipart
from .dicom_xml import json_to_xml
from .errors import BadRequest
from .media import DICOM_JSON, DICOM_XML, MULTIPART_RELATED
from .qido_params import parse_query
from .qido_response import ResultFormat
from .web import archive, base_url, require_uids, settings, wants_xml, warning

bp = Blueprint("qido_rs", __name__)

TRUNCATED = ("the number of results exceeded the maximum supported by the server; "
             "additional results can be requested with offset")


@bp.get("/patients")
def search_patients() -> Response:
    """Patient-level search, as dcm4chee and the O3-DPACS statement offer (not part of PS3.18)."""
    return _search("patient", {})


@bp.get("/studies")
def search_studies() -> Response:
    return _search("study", {})


@bp.get("/series")
@bp.get("/studies/<study>/series")
def search_series(study: str | None = None) -> Response:
    require_uids(study=study)
    return _search("series", {"StudyInstanceUID": study} if study else {})


@bp.get("/instances")
@bp.get("/studies/<study>/instances")
@bp.get("/studies/<study>/series/<series>/instances")
def search_instances(study: str | None = None, series: str | None = None) -> Response:
    require_uids(study=study, series=series)
    scoped = {k: v for k, v in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)) if v}
    return _search("instance", scoped)


def _search(level: str, scoped: dict[str, str]) -> Response:
    as_xml = wants_xml("search results")   # PS3.18 §10.6.3.2
    max_results = settings().qido_max_results
    try:
        query, warnings = parse_query(level, request.args.items(multi=True), max_results, scoped)
        rows, more = archive().catalog.search(query)
    except QueryError as exc:
        raise BadRequest(str(exc)) from None
    if more and "limit" not in request.args:
        warnings.append(TRUNCATED)
    to_json = ResultFormat(query.returned(), level, base_url())
    results = [to_json(row) for row in rows]
    if as_xml:
        boundary = multipart.new_boundary()
        parts = [multipart.Part({"Content-Type": DICOM_XML}, [json_to_xml(r)]) for r in results]
        response = Response(b"".join(multipart.encode_parts(parts, boundary)),
                            content_type=f'{MULTIPART_RELATED}; type="{DICOM_XML}"; boundary={boundary}')
    else:
        response = Response(orjson.dumps(results), mimetype=DICOM_JSON)
    for text in warnings:
        response.headers.add("Warning", warning(text))
    return response


