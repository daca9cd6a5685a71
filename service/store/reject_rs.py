"""Reject (IHE IOCM, as dcm4chee offers it and OHIF's ``supportsReject`` calls it):
``POST …/reject/{code}^{scheme}`` on a study, series or instance stores a Rejection Note (a Key
Object Selection titled by the code) in a series of its own in the study, and hides the
instances it names from every resource, their blobs kept until `dicomweb purge` removes them.
A Rejection Note received by STOW has the same effect (``received_notes``, ``apply_notes``). Needs the
peer's ``delete`` permission, as a delete does."""
from __future__ import annotations

import io
from typing import Sequence

from flask import Response, jsonify, request
from pydicom.uid import UID

from storage import StoredInstance, StoreOutcome

from ..access.header import stored_header
from ..auth import DELETED_ENVIRON_KEY
from ..errors import BadRequest, ServiceUnavailable
from ..web import archive, base_url, require_uids
from ..wire import urls
from .delete_rs import no_such
from .rejection import KEY_OBJECT_SELECTION, UnknownRejectionCode, parse_code, rejected_by, rejection_note


def reject(study: str, code: str, series: str | None = None, instance: str | None = None) -> Response:
    require_uids(study=study, series=series, instance=instance)
    try:
        reason = parse_code(code)
    except UnknownRejectionCode as exc:
        raise BadRequest(str(exc)) from None
    store = archive()
    notes = {row.note for row in store.catalog.rejected(study)}
    found = [i for i in store.instances(study, series, instance) if i.sop_instance_uid not in notes]
    if not found:
        raise no_such(series, instance)
    header = stored_header(store, found[0])
    note_series, note_sop, data = rejection_note(header, [(i.series_uid, i.sop_instance_uid, i.sop_class_uid)
                                                          for i in found], reason, _image_classes(found))
    batch = store.batch(may_replace=False)
    batch.add(io.BytesIO(data))
    [outcome] = batch.commit()
    if not outcome.stored:   # the archive's own failure (a full disk, the catalog away): nothing was hidden
        raise ServiceUnavailable(f"the Rejection Note could not be stored ({outcome.message}); nothing was rejected")
    count = store.reject(found, code, note_sop)
    request.environ[DELETED_ENVIRON_KEY] = count
    location = urls.retrieve_url(base_url(), study, note_series, note_sop)
    response = jsonify(rejected=count, reason=code, rejectionNote=location)
    response.headers["Content-Location"] = location
    return response


def received_notes(outcomes: Sequence[StoreOutcome]) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """The Rejection Notes among stored ``outcomes``: (note SOP Instance UID, code^scheme, what it names)."""
    store = archive()
    notes = []
    for outcome in outcomes:
        if not outcome.stored or outcome.sop_class_uid != KEY_OBJECT_SELECTION:
            continue
        found = store.instances(outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
        rejection = rejected_by(stored_header(store, found[0])) if found else None
        if rejection is not None:
            (value, scheme), referenced = rejection
            notes.append((outcome.sop_instance_uid, f"{value}^{scheme}", referenced))
    return notes


def apply_notes(notes: Sequence[tuple[str, str, list[tuple[str, str, str]]]]) -> int:
    """Reject what each of ``notes`` names (received_notes); how many instances."""
    store = archive()
    count = 0
    for note, code, referenced in notes:
        by_study: dict[str, list[StoredInstance]] = {}
        for study, series, sop in referenced:
            for found in store.instances(study, series, sop):
                by_study.setdefault(study, []).append(found)
        count += sum(store.reject(found, code, note) for found in by_study.values())
    return count


def _image_classes(found: Sequence[StoredInstance]) -> set[str]:
    """SOP classes of ``found`` that are image storage classes (referenced as IMAGE items)."""
    return {i.sop_class_uid for i in found if "Image Storage" in UID(i.sop_class_uid).name}
