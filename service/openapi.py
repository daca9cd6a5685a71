"""GET /openapi.json: the OpenAPI 3.1 description of the whole API.

Paths come from the app's own URL map, so a route cannot be missing from the document, and
what needs no key from the route table (service.routes); what each endpoint takes and answers
is described here, once per endpoint.
"""
from __future__ import annotations

import re

from flask import Flask, current_app, jsonify

_UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64}
_PATH_PARAMETERS = {
    "transaction": ("the Transaction UID of a Storage Commitment request", _UID),
    "code": ("a rejection code as value^scheme: 113001^DCM, 113037^DCM, 113038^DCM or 113039^DCM", {"type": "string"}),
    "study": ("Study Instance UID", _UID), "series": ("Series Instance UID", _UID),
    "instance": ("SOP Instance UID", _UID),
    "frames": ("frame numbers from 1, comma-separated", {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)*$"}),
    "path": ("tag[/item/tag…] of a BulkDataURI", {"type": "string"}),
    "workitem": ("a workitem's UID, or 1.2.840.10008.5.1.4.34.5 (the Worklist) or 1.2.840.10008.5.1.4.34.5.1 "
                 "(the filtered Worklist) for a subscription", _UID),
    "subscriber": ("the subscriber's AE title (1 to 16 characters)", {"type": "string", "maxLength": 16}),
}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_ACCEPT = _query("accept", "overrides the Accept header (PS3.18 §8.3.3.1)")
_ANONYMIZE = _query("anonymize", "true: the PS3.15 Basic Profile applied to the copy sent", {"type": "boolean"})
_RENDERING = [
    _query("quality", "JPEG quality", {"type": "integer", "minimum": 1, "maximum": 100}),
    _query("window", "center,width[,linear|linear-exact|sigmoid]"),
    _query("viewport", "vw,vh or vw,vh,sx,sy,sw,sh"),
    _query("annotation", "patient,technique"),
    _query("iccprofile", "no, yes or srgb"),
    _query("charset", "of a report's text (HTML, plain); annotations are drawn from Unicode"),
]
_QIDO = [
    _query("limit", "results at most", {"type": "integer", "minimum": 1}),
    _query("offset", "results skipped", {"type": "integer", "minimum": 0}),
    _query("includefield", "more attributes in each result, or all"),
    _query("fuzzymatching", "person names match by component", {"type": "boolean"}),
]
_WADO_URI = [_query(name, description) for name, description in [
    ("requestType", "WADO (required)"), ("studyUID", "required"), ("seriesUID", "required"),
    ("objectUID", "required"), ("contentType", "application/dicom, image/jpeg, image/png, image/gif, text/html, "
                                              "text/plain, application/pdf"),
    ("charset", "of a report's text"), ("presentationUID", "a presentation state applied, with presentationSeriesUID"),
    ("presentationSeriesUID", "the presentation state's series"),
    ("transferSyntax", "with application/dicom"), ("anonymize", "yes, with application/dicom"),
    ("rows", "image height"), ("columns", "image width"), ("region", "x1,y1,x2,y2 from 0 to 1"),
    ("windowCenter", "with windowWidth"), ("windowWidth", "with windowCenter"), ("frameNumber", "from 1"),
    ("imageQuality", "JPEG quality, 1 to 100"), ("annotation", "patient,technique"),
]]

_DICOM_PARTS = 'multipart/related; type="application/dicom"'
_XML_PARTS = 'multipart/related; type="application/dicom+xml"'
_STATUS = {"400": "malformed request", "401": "no valid API key", "403": "the peer lacks the permission",
           "404": "not in the archive",
           "406": "no acceptable representation", "413": "too large", "503": "busy: retry later"}

_DATASET = ["application/dicom+json", "application/dicom+xml"]
_UPS = ["UPS-RS"]
_UPS_SEARCH = [
    _query("limit", "results at most", {"type": "integer", "minimum": 1}),
    _query("offset", "results skipped", {"type": "integer", "minimum": 0}),
    _query("ProcedureStepState", "SCHEDULED, IN PROGRESS, COMPLETED or CANCELED; any attribute of the table in "
                                 "docs/conformance.md matches the same way, sequence keys dotted"),
]

ENDPOINTS: dict[str, dict] = {
    "ups_rs.create": {"summary": "UPS-RS: create a workitem, SCHEDULED (?{uid} or ?workitem={uid}; PS3.18 11.4)",
                      "tags": _UPS, "body": _DATASET, "query": [_query("workitem", "the new workitem's UID")],
                      "answers": {"201": [], "409": ["application/json"], "415": ["application/json"]}},
    "ups_rs.search": {"summary": "UPS-RS: search workitems (PS3.18 11.9)", "tags": _UPS, "query": _UPS_SEARCH,
                      "answers": {"200": ["application/dicom+json", _XML_PARTS]}},
    "ups_rs.retrieve": {"summary": "UPS-RS: a workitem, without its Transaction UID (PS3.18 11.5)", "tags": _UPS,
                        "answers": {"200": _DATASET}},
    "ups_rs.update": {"summary": "UPS-RS: update a workitem (?transaction= for an IN PROGRESS one; PS3.18 11.6)",
                      "tags": _UPS, "body": _DATASET, "query": [_query("transaction", "the Transaction UID")],
                      "answers": {"200": [], "409": ["application/json"]}},
    "ups_rs.change_state": {"summary": "UPS-RS: claim, complete or cancel a workitem (PS3.18 11.7)", "tags": _UPS,
                            "body": _DATASET, "answers": {"200": [], "409": ["application/json"]}},
    "ups_rs.request_cancel": {"summary": "UPS-RS: ask that a workitem be canceled (PS3.18 11.8)", "tags": _UPS,
                              "body": _DATASET, "answers": {"202": [], "409": ["application/json"]}},
    "ups_rs.subscribe": {"summary": "UPS-RS: subscribe an AE title to a workitem or the Worklist (PS3.18 11.10)",
                         "tags": _UPS, "query": [_query("deletionlock", "true: a final workitem is kept until this "
                                                                        "subscription ends", {"type": "boolean"}),
                                                 _query("filter", "key=value,… for the filtered Worklist")],
                         "answers": {"201": []}},
    "ups_rs.unsubscribe": {"summary": "UPS-RS: end a subscription (PS3.18 11.11)", "tags": _UPS,
                           "answers": {"200": []}},
    "ups_rs.suspend": {"summary": "UPS-RS: suspend a Worklist subscription (PS3.18 11.12)", "tags": _UPS,
                       "answers": {"200": []}},
    "ups_rs.open_channel": {"summary": "UPS-RS: the event channel, a WebSocket (Upgrade: websocket; PS3.18 8.10.4); "
                                       "event reports as DICOM JSON text frames",
                            "tags": _UPS, "answers": {"101": [], "426": ["application/json"], "503": ["application/json"]}},
    "ups_rs.upgrade_required": {"summary": "UPS-RS: the event channel asked for without a WebSocket upgrade",
                                "tags": _UPS, "answers": {"426": ["application/json"]}},

    "stow_rs.store": {"summary": "STOW-RS: store instances", "tags": ["STOW-RS"],
                      "body": [_DICOM_PARTS, "application/dicom"],
                      "answers": {"200": ["application/dicom+json", "application/dicom+xml"],
                                  "202": ["application/dicom+json"], "409": ["application/dicom+json"]}},
    "delete_rs.delete": {"summary": "delete a study, series or instance (needs the delete permission)",
                         "tags": ["lifecycle"], "answers": {"204": [], "404": ["application/json"]}},
    "reject_rs.reject": {"summary": "reject (IOCM): a Rejection Note stored, the instances hidden until purged "
                                    "(code^scheme, e.g. 113001^DCM; needs the delete permission)",
                         "tags": ["lifecycle"], "answers": {"200": ["application/json"], "404": ["application/json"]}},
    "commitment.request_commitment": {"summary": "Storage Commitment: which of the named instances the archive "
                                                 "commits to keep (PS3.18 13.4)", "tags": ["lifecycle"],
                                      "body": ["application/dicom+json", "application/dicom+xml"],
                                      "answers": {"200": ["application/dicom+json", "application/dicom+xml"],
                                                  "409": ["application/json"]}},
    "commitment.check_result": {"summary": "Storage Commitment: the result again (PS3.18 13.5)", "tags": ["lifecycle"],
                                "answers": {"200": ["application/dicom+json", "application/dicom+xml"],
                                            "404": ["application/json"]}},
    "qido_rs.search_studies": {"summary": "QIDO-RS: search studies", "tags": ["QIDO-RS"], "query": _QIDO,
                               "answers": {"200": ["application/dicom+json", _XML_PARTS]}},
    "qido_rs.search_series": {"summary": "QIDO-RS: search series", "tags": ["QIDO-RS"], "query": _QIDO,
                              "answers": {"200": ["application/dicom+json", _XML_PARTS]}},
    "qido_rs.search_instances": {"summary": "QIDO-RS: search instances", "tags": ["QIDO-RS"], "query": _QIDO,
                                 "answers": {"200": ["application/dicom+json", _XML_PARTS]}},
    "qido_rs.search_patients": {"summary": "QIDO-RS: search patients", "tags": ["QIDO-RS"], "query": _QIDO,
                                "answers": {"200": ["application/dicom+json", _XML_PARTS]}},
    "wado_rs.retrieve_instances": {"summary": "WADO-RS: retrieve instances, in any transfer syntax they fit",
                                   "tags": ["WADO-RS"], "query": [_ACCEPT, _ANONYMIZE],
                                   "answers": {"200": [_DICOM_PARTS, "application/dicom",
                                                       'multipart/related; type="image/jpeg"'],
                                               "206": [_DICOM_PARTS]}},
    "metadata_rs.retrieve_metadata": {"summary": "WADO-RS: metadata", "tags": ["WADO-RS"],
                                      "query": [_ACCEPT, _ANONYMIZE],
                                      "answers": {"200": ["application/dicom+json", _XML_PARTS], "304": []}},
    "frames_rs.retrieve_frames": {"summary": "WADO-RS: frames, native or in a compressed syntax", "tags": ["WADO-RS"],
                                  "query": [_ACCEPT, _ANONYMIZE],
                                  "answers": {"200": ['multipart/related; type="application/octet-stream"',
                                                      'multipart/related; type="image/jls"',
                                                      'multipart/related; type="image/jp2"',
                                                      'multipart/related; type="image/jpeg"',
                                                      'multipart/related; type="image/jphc"',
                                                      'multipart/related; type="image/jxl"',
                                                      'multipart/related; type="image/dicom-rle"']}},
    "bulkdata_rs.retrieve_bulkdata": {"summary": "WADO-RS: bulk data of a BulkDataURI", "tags": ["WADO-RS"],
                                      "query": [_ACCEPT, _ANONYMIZE],
                                      "answers": {"200": ['multipart/related; type="application/octet-stream"',
                                                          "application/octet-stream"], "206": ["application/octet-stream"],
                                                  "416": []}},
    "rendered_rs.rendered": {"summary": "WADO-RS: rendered images", "tags": ["WADO-RS"],
                             "query": [_ACCEPT, _ANONYMIZE, *_RENDERING],
                             "answers": {"200": ["image/jpeg", "image/png", "image/gif", "image/jp2",
                                                 "text/html", "text/plain", "application/pdf", "text/xml",
                                                 "video/mp4", "video/mp2t", "video/mpeg",
                                                 'multipart/related; type="image/jpeg"'], "206": [], "304": []}},
    "rendered_rs.thumbnail": {"summary": "WADO-RS: thumbnail of a representative instance", "tags": ["WADO-RS"],
                              "query": [_ACCEPT, _ANONYMIZE, *_RENDERING],
                              "answers": {"200": ["image/jpeg", "image/png", "image/gif"], "304": []}},
    "wado_uri.wado": {"summary": "WADO-URI (PS3.18 §9)", "tags": ["WADO-URI"], "query": _WADO_URI,
                      "answers": {"200": ["application/dicom", "image/jpeg", "image/png", "image/gif", "text/html",
                                          "text/plain", "application/pdf"]}},
    "fhir.search": {"summary": "FHIR R4 ImagingStudy search", "tags": ["FHIR"],
                    "query": [_query(name, description) for name, description in [
                        ("patient", "a Patient ID, or Patient/<id>"), ("patient.identifier", "[system|]value"),
                        ("identifier", "urn:oid:<Study Instance UID>, or an accession number"),
                        ("started", "a date with eq, ge, gt, le or lt; repeat for a range"),
                        ("modality", "[system|]code"), ("_count", "entries a page"), ("_offset", "entries skipped")]],
                    "answers": {"200": ["application/fhir+json"]}},
    "fhir.read": {"summary": "FHIR R4 ImagingStudy by Study Instance UID", "tags": ["FHIR"],
                  "answers": {"200": ["application/fhir+json"]}},
    "health.health": {"summary": "liveness", "tags": ["operations"],
                      "answers": {"200": ["application/json"]}},
    "health.ready": {"summary": "readiness: catalog and blob store reachable", "tags": ["operations"],
                     "answers": {"200": ["application/json"], "503": ["application/json"]}},
    "health.prometheus": {"summary": "Prometheus metrics", "tags": ["operations"],
                          "answers": {"200": ["text/plain"]}},
    "openapi.openapi_document": {"summary": "this document", "tags": ["operations"],
                         "answers": {"200": ["application/json"]}},
    "viewer.landing": {"summary": "start page for people", "tags": ["people"], "answers": {"200": ["text/html"]}},
    "viewer.api_page": {"summary": "this document, readable", "tags": ["people"], "answers": {"200": ["text/html"]}},
    "viewer.conformance": {"summary": "the conformance statement", "tags": ["people"],
                           "answers": {"200": ["text/plain"], "404": []}},
    "viewer.login_form": {"summary": "sign-in form of the viewer", "tags": ["people"],
                          "answers": {"200": ["text/html"]}},
    "viewer.login": {"summary": "sign in with a person's key: sets the session cookie", "tags": ["people"],
                     "body": ["application/x-www-form-urlencoded"],
                     "answers": {"303": [], "401": ["text/html"], "403": ["application/json"], "429": ["text/html"]}},
    "viewer.logout_form": {"summary": "sign-out form", "tags": ["people"], "answers": {"200": ["text/html"]}},
    "viewer.logout": {"summary": "sign out: ends the session", "tags": ["people"], "answers": {"303": []}},
    "viewer.viewer": {"summary": "the OHIF viewer (its files, and its page for its own routes)", "tags": ["people"],
                      "answers": {"200": ["text/html", "text/javascript"], "303": [], "404": ["text/html"]}},
}
ENDPOINTS["wado_uri_root.wado"] = ENDPOINTS["wado_uri.wado"]


def document(app: Flask) -> dict:
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        spec = ENDPOINTS.get(rule.endpoint)
        if spec is None:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, path, method, spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": "DICOMweb archive", "version": "1",
                 "description": "A DICOM PS3.18 origin server: STOW-RS, QIDO-RS, WADO-RS, WADO-URI. "
                                "Behaviour against the standard: docs/conformance.md."},
        "components": {"securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization",
                       "description": "the key, or ApiKey <key>"},
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": paths,
    }


def _operation(endpoint: str, path: str, method: str, spec: dict) -> dict:
    from .routes import public_endpoints   # not at the top: the route table imports this module's view

    parameters = [{"name": name, "in": "path", "required": True, "description": description, "schema": schema}
                  for name, (description, schema) in _PATH_PARAMETERS.items() if "{" + name + "}" in path]
    operation: dict = {"summary": spec["summary"], "tags": spec["tags"],
                       "operationId": f"{endpoint}.{method.lower()}.{path}",
                       "parameters": parameters + spec.get("query", []),
                       "responses": {code: ({"description": code, "content": {t: {} for t in types}} if types
                                            else {"description": code})
                                     for code, types in spec["answers"].items()}}
    if endpoint not in public_endpoints():
        operation["responses"].update({code: {"description": text} for code, text in _STATUS.items()
                                       if code not in operation["responses"]})
    else:
        operation["security"] = []
    if "body" in spec:
        operation["requestBody"] = {"required": True, "content": {t: {} for t in spec["body"]}}
    return operation


def openapi_document():
    return jsonify(document(current_app))
