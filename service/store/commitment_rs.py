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
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from ..web import archive, dataset_payload, dataset_response, require_uids, single_dataset_as_xml
from ..wire.tags import KEY

MAX_BODY_BYTES = 8 << 20
MAX_REFERENCES = 10_000
RESULT_DAYS = 7
# Failure Reasons (PS3.4 J.3.2.1.1.1 / C.4.2.1.4.1.1)
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


def request_commitment(transaction: str) -> Response:
    require_uids(**{"Transaction UID": transaction})
    as_xml = single_dataset_as_xml("the Storage Commitment result")
    references = _references(dataset_payload("a Storage Commitment request", MAX_BODY_BYTES))
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
    return dataset_response(result, as_xml)


def check_result(transaction: str) -> Response:
    require_uids(**{"Transaction UID": transaction})
    as_xml = single_dataset_as_xml("the Storage Commitment result")
    row = archive().catalog.commitment(transaction)
    if row is None or row.peer != request.environ.get(PEER_ENVIRON_KEY):   # another peer's: not told
        raise NotFound(f"no Storage Commitment request {transaction} of this peer is kept")
    return dataset_response(orjson.loads(row.result), as_xml)


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
