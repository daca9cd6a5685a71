"""The STOW-RS response (PS3.18 §10.5.3): status code and Store Instances Response data set."""
from __future__ import annotations

from typing import Sequence

from storage import StoreOutcome

from ..wire import urls
from ..wire.tags import KEY


def response_status(outcomes: Sequence[StoreOutcome]) -> int:
    """200 when every instance was stored, 409 when none was, 202 otherwise."""
    stored = sum(1 for o in outcomes if o.stored)
    if outcomes and stored == len(outcomes):
        return 200
    if stored == 0:
        return 409
    return 202


def response_model(outcomes: Sequence[StoreOutcome], base_url: str, study_uid: str | None) -> dict:
    """The Store Instances Response as DICOM JSON: Referenced SOP Sequence for stored instances,
    Failed SOP Sequence only when some failed. Built as plain dicts (a pydicom item per instance
    of a large batch was most of the answer's cost).

    The top-level Retrieve URL names the study of the request URL, or the one
    study all stored instances belong to.
    """
    model: dict = {}
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    studies = {o.study_uid for o in stored}
    if study_uid is None and len(studies) == 1:
        study_uid = next(iter(studies))
    if study_uid is not None:
        model[KEY.RetrieveURL] = {"vr": "UR", "Value": [urls.retrieve_url(base_url, study_uid)]}
    if failed:
        model[KEY.FailedSOPSequence] = {"vr": "SQ", "Value": [_item(o) for o in failed]}
    if stored:
        model[KEY.ReferencedSOPSequence] = {"vr": "SQ", "Value": [_item(o, base_url) for o in stored]}
    return model


def _item(outcome: StoreOutcome, base_url: str | None = None) -> dict:
    item: dict = {}
    if outcome.sop_class_uid:
        item[KEY.ReferencedSOPClassUID] = {"vr": "UI", "Value": [outcome.sop_class_uid]}
    if outcome.sop_instance_uid:
        item[KEY.ReferencedSOPInstanceUID] = {"vr": "UI", "Value": [outcome.sop_instance_uid]}
    if outcome.failure is not None:
        item[KEY.FailureReason] = {"vr": "US", "Value": [int(outcome.failure)]}
    elif base_url is not None:
        url = urls.retrieve_url(base_url, outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
        item[KEY.RetrieveURL] = {"vr": "UR", "Value": [url]}
    return item
