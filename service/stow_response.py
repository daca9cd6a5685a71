"""The STOW-RS response (PS3.18 §10.5.3): status code and Store Instances Response data set."""
from __future__ import annotations

from typing import Sequence

from pydicom import Dataset

from storage import StoreOutcome

from . import urls


def response_status(outcomes: Sequence[StoreOutcome]) -> int:
    """200 when every instance was stored, 409 when none was, 202 otherwise."""
    stored = sum(1 for o in outcomes if o.stored)
    if outcomes and stored == len(outcomes):
        return 200
    if stored == 0:
        return 409
    return 202


def response_dataset(outcomes: Sequence[StoreOutcome], base_url: str, study_uid: str | None) -> Dataset:
    """Referenced SOP Sequence for stored instances, Failed SOP Sequence only when some failed.

    The top-level Retrieve URL names the study of the request URL, or the one
    study all stored instances belong to.
    """
    ds = Dataset()
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    studies = {o.study_uid for o in stored}
    if study_uid is None and len(studies) == 1:
        study_uid = next(iter(studies))
    if study_uid is not None:
        ds.RetrieveURL = urls.retrieve_url(base_url, study_uid)
    if failed:
        ds.FailedSOPSequence = [_item(o) for o in failed]
    if stored:
        ds.ReferencedSOPSequence = [_item(o, base_url) for o in stored]
    return ds


def _item(outcome: StoreOutcome, base_url: str | None = None) -> Dataset:
    item = Dataset()
    if outcome.sop_class_uid:
        item.ReferencedSOPClassUID = outcome.sop_class_uid
    if outcome.sop_instance_uid:
        item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
    if outcome.failure is not None:
        item.FailureReason = int(outcome.failure)
    elif base_url is not None:
        item.RetrieveURL = urls.retrieve_url(base_url, outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
    return item
