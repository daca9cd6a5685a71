"""Storage Commitment (PS3.18 chapter 13; PS3.4 annex J semantics): the sender names SOP
instances and the archive says which it commits to keep. ``POST /commitment-requests/{transaction}``
answers at once (200, never 202: the check is done within the request), ``GET`` of the same
resource answers the result again. An instance is committed only when the archive holds it
(catalogued, so its blob was made durable before), under the SOP class named, and its stored
bytes still have the SHA-256 recorded when it arrived; anything else is in the Failed SOP
Sequence with its Failure Reason. Results are kept in the catalog for the peer that asked,
``RESULT_DAYS`` days (``dicomweb sweep`` forgets older ones)."""
from __future__ import annotations

import orjson
from flask import Response, request

from ..auth import PEER_ENVIRON_KEY
from ..errors import BadRequest, DicomWebError, NotAcceptable, NotFound, PayloadTooLarge, UnsupportedMediaType
from ..web import accepted, archive, require_uids
from ..wire.dicom_xml import json_to_xml, xml_to_json
from ..wire.media import DICOM_JSON, DICOM_XML, parse_media_type, response_format
from ..wire.tags import KEY

MAX_BODY_BYTES = 8 << 20
MAX_REFERENCES = 10_000
RESULT_DAYS = 7
# Failure Reasons (PS3.4 J.3.2.1.1.1 / C.4.2.1.4.1.1)
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


class Conflict(DicomWebError):
    status, title = 409, "Conflict"


def request_commitment(transaction: str) -> Response:
    require_uids(**{"Transaction UID": transaction})
    as_xml = _wants_xml()
    references = _references(_payload())
    store = archive()
    if store.catalog.commitment(transaction) is not None:
        raise Conflict(f"the Transaction UID {transaction} is in use already")
    held = store.catalog.instances_by_sop([uid for _, uid in references])
    committed, failed = [], []
    for sop_class, uid in references:
        instance = held.get(uid)
        if instance is None:
            failed.append(_failed(sop_class, uid, NO_SUCH_OBJECT_INSTANCE))
        elif instance.sop_class_uid != sop_class:
            failed.append(_failed(sop_class, uid, CLASS_INSTANCE_CONFLICT))
        elif not store.intact(instance):
            failed.append(_failed(sop_class, uid, PROCESSING_FAILURE))
        else:
            committed.append(_reference(sop_class, uid))
    result = {KEY.FailedSOPSequence: {"vr": "SQ", "Value": failed},
              KEY.ReferencedSOPSequence: {"vr": "SQ", "Value": committed}}
    text = orjson.dumps(result).decode()
    if not store.catalog.keep_commitment(transaction, request.environ.get(PEER_ENVIRON_KEY), text):
        raise Conflict(f"the Transaction UID {transaction} is in use already")
    return _answer(result, as_xml)


def check_result(transaction: str) -> Response:
    require_uids(**{"Transaction UID": transaction})
    as_xml = _wants_xml()
    row = archive().catalog.commitment(transaction)
    if row is None or row.peer != request.environ.get(PEER_ENVIRON_KEY):   # another peer's: not told
        raise NotFound(f"no Storage Commitment request {transaction} of this peer is kept")
    return _answer(orjson.loads(row.result), as_xml)


def _wants_xml() -> bool:
    chosen = response_format(accepted(), (DICOM_JSON, DICOM_XML, "application/json"))
    if chosen is None:
        raise NotAcceptable("the Storage Commitment result is sent as application/dicom+json or application/dicom+xml")
    return chosen == DICOM_XML


def _answer(result: dict, as_xml: bool) -> Response:
    if as_xml:
        return Response(json_to_xml(result), mimetype=DICOM_XML)
    return Response(orjson.dumps(result), mimetype=DICOM_JSON)


def _payload() -> dict:
    kind = parse_media_type(request.headers.get("Content-Type", "")).type if request.headers.get("Content-Type") else ""
    if kind not in (DICOM_JSON, DICOM_XML, "application/json"):
        raise UnsupportedMediaType("a Storage Commitment request is application/dicom+json or application/dicom+xml")
    if request.content_length is None or request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"a Storage Commitment request is at most {MAX_BODY_BYTES} bytes, sent with its "
                              "Content-Length")
    data = request.get_data(cache=False)
    try:
        model = xml_to_json(data) if kind == DICOM_XML else orjson.loads(data)
    except ValueError as exc:
        raise BadRequest(f"the request is not a DICOM {'XML' if kind == DICOM_XML else 'JSON'} object: {exc}") from None
    if isinstance(model, list) and len(model) == 1:   # a DICOM JSON array of one data set
        model = model[0]
    if not isinstance(model, dict):
        raise BadRequest("the request is not a DICOM JSON object")
    return model


def _references(model: dict) -> list[tuple[str, str]]:
    """(SOP Class UID, SOP Instance UID) of the Referenced SOP Sequence, each checked."""
    items = (model.get(KEY.ReferencedSOPSequence) or {}).get("Value")
    if not isinstance(items, list) or not items:
        raise BadRequest("the request names no instance: the Referenced SOP Sequence (00081199) is missing or empty")
    if len(items) > MAX_REFERENCES:
        raise PayloadTooLarge(f"a Storage Commitment request names at most {MAX_REFERENCES} instances")
    references = []
    for number, item in enumerate(items, 1):
        sop_class, uid = (_single_uid(item, tag) for tag in (KEY.ReferencedSOPClassUID, KEY.ReferencedSOPInstanceUID))
        if sop_class is None or uid is None:
            raise BadRequest(f"item {number} of the Referenced SOP Sequence lacks its Referenced SOP Class UID or "
                             "Referenced SOP Instance UID")
        require_uids(**{f"Referenced SOP Class UID of item {number}": sop_class,
                        f"Referenced SOP Instance UID of item {number}": uid})
        references.append((sop_class, uid))
    return references


def _single_uid(item: object, tag: str) -> str | None:
    if not isinstance(item, dict):
        return None
    values = (item.get(tag) or {}).get("Value") if isinstance(item.get(tag), dict) else None
    return values[0] if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str) else None


def _reference(sop_class: str, uid: str) -> dict:
    return {KEY.ReferencedSOPClassUID: {"vr": "UI", "Value": [sop_class]},
            KEY.ReferencedSOPInstanceUID: {"vr": "UI", "Value": [uid]}}


def _failed(sop_class: str, uid: str, reason: int) -> dict:
    return {**_reference(sop_class, uid), KEY.FailureReason: {"vr": "US", "Value": [reason]}}
