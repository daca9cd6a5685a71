"""Unified Procedure Step rules (PS3.4 annex CC, PS3.18 chapter 11), pure: workitems as DICOM
JSON models (tag → element), and what each transaction may do to one.

Every decision returns the new model and the events it causes, or raises ``Refused`` with
the HTTP status PS3.18 gives it and the Warning text the standard words (PS3.18 §11.6.3,
§11.7.3). The catalog (``storage.worklist``) runs these inside the transaction that holds
the workitem's row, so what is decided here is what is committed.
"""
from __future__ import annotations

import copy
import re

import orjson
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydicom.datadict import dictionary_VR, tag_for_keyword

Model = dict[str, Any]   # DICOM JSON: "GGGGEEEE" → {"vr": …, "Value": […]}

PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
EVENT_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.4"
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"            # the Worklist: every workitem
FILTERED_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"        # the workitems a filter matches
WELL_KNOWN = (GLOBAL_SUBSCRIPTION, FILTERED_SUBSCRIPTION)

SCHEDULED, IN_PROGRESS, CANCELED, COMPLETED = "SCHEDULED", "IN PROGRESS", "CANCELED", "COMPLETED"
STATES = (SCHEDULED, IN_PROGRESS, CANCELED, COMPLETED)
FINAL = frozenset({CANCELED, COMPLETED})

# Event Type IDs of the UPS Event SOP Class (PS3.4 table CC.2.4-1).
STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5

# The Warning texts of PS3.18 §11.7.3.2 (and §11.6.3, §11.8.3).
TRANSACTION_MISSING = "The Transaction UID is missing."
TRANSACTION_INCORRECT = "The Transaction UID is incorrect."
INCONSISTENT = "The submitted request is inconsistent with the state of the UPS Instance."
ALREADY = "The UPS is already in the requested state of {}."
ALREADY_COMPLETED = "The UPS is already COMPLETED."
PERFORMER_UNREACHABLE = "The performer cannot be contacted: no subscriber of the UPS will see the request."


def tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


T = {k: tag(k) for k in (
    "SOPClassUID", "SOPInstanceUID", "TransactionUID", "ProcedureStepState", "InputReadinessState",
    "ScheduledProcedureStepPriority", "ProcedureStepLabel", "WorklistLabel", "ScheduledProcedureStepStartDateTime",
    "ScheduledProcedureStepModificationDateTime", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "IssuerOfPatientID", "OtherPatientIDsSequence", "IssuerOfPatientIDQualifiersSequence", "AdmissionID",
    "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
    "ReferencedRequestSequence", "ReplacedProcedureStepSequence", "ScheduledWorkitemCodeSequence",
    "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledHumanPerformersSequence", "HumanPerformerCodeSequence",
    "HumanPerformerOrganization", "InputInformationSequence", "StudyInstanceUID",
    "ProcedureStepProgressInformationSequence", "ProcedureStepCancellationDateTime", "ReasonForCancellation",
    "ProcedureStepDiscontinuationReasonCodeSequence", "ContactURI", "ContactDisplayName",
    "ProcedureStepCommunicationsURISequence", "UnifiedProcedureStepPerformedProcedureSequence",
    "PerformedProcedureStepStartDateTime", "PerformedProcedureStepEndDateTime", "PerformedStationNameCodeSequence",
    "PerformedWorkitemCodeSequence", "OutputInformationSequence", "ActualHumanPerformersSequence",
    "SCPStatus", "SubscriptionListStatus", "UnifiedProcedureStepListStatus", "CodeValue", "CodingSchemeDesignator",
    "CodeMeaning", "LongCodeValue", "URNCodeValue", "AccessionNumber", "RequestedProcedureID",
    "RequestedProcedureDescription", "RequestedProcedureCodeSequence", "SpecificCharacterSet",
    "ScheduledProcessingParametersSequence",
)}

ENUMERATED = {
    "ProcedureStepState": STATES,
    "InputReadinessState": ("INCOMPLETE", "UNAVAILABLE", "READY"),
    "ScheduledProcedureStepPriority": ("HIGH", "MEDIUM", "LOW"),
}
# Type 1 at creation (PS3.4 table CC.2.5-3, N-CREATE column): present, with a value.
REQUIRED_AT_CREATE = ("ScheduledProcedureStepPriority", "ProcedureStepLabel",
                      "ScheduledProcedureStepStartDateTime", "InputReadinessState", "ProcedureStepState")
# Type 2 at creation (the N-CREATE column of table CC.2.5-3): present, maybe empty. An SCU that
# leaves one out gets it added empty (a Warning names them): refusing would be stricter than the
# SCPs peers meet elsewhere.
PRESENT_AT_CREATE = ("PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
                     "OtherPatientIDsSequence", "PatientBirthDate", "PatientSex", "AdmissionID",
                     "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
                     "ReferencedRequestSequence", "ScheduledProcessingParametersSequence",
                     "ScheduledWorkitemCodeSequence", "ScheduledStationNameCodeSequence",
                     "ScheduledStationClassCodeSequence", "ScheduledStationGeographicLocationCodeSequence",
                     "InputInformationSequence", "ProcedureStepProgressInformationSequence",
                     "UnifiedProcedureStepPerformedProcedureSequence")
# Type 2 at creation and empty: they record the performance, which has not begun (their items
# are not allowed at N-CREATE). Sent empty, as the table has SCUs send them, they are taken.
EMPTY_AT_CREATE = ("ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence")
# Type 3 for the SCU, 1 for the SCP: the SCP fills in a default when the SCU gives none.
DEFAULT_WORKLIST_LABEL = "WORKLIST"
# Not changed by an update (N-SET): the identity, the patient and the order (PS3.4 CC.2.6.3);
# the state changes by its own transaction.
FORBIDDEN_IN_UPDATE = ("SOPClassUID", "SOPInstanceUID", "ProcedureStepState", "PatientName",
                       "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "PatientBirthDate",
                       "PatientSex", "OtherPatientIDsSequence", "AdmissionID", "IssuerOfAdmissionIDSequence",
                       "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence",
                       "ReferencedRequestSequence", "ReplacedProcedureStepSequence")
CODE_SEQUENCES = ("ScheduledWorkitemCodeSequence", "ScheduledStationNameCodeSequence",
                  "ScheduledStationClassCodeSequence", "ScheduledStationGeographicLocationCodeSequence",
                  "PerformedStationNameCodeSequence", "PerformedWorkitemCodeSequence",
                  "ProcedureStepDiscontinuationReasonCodeSequence")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")


class Refused(Exception):
    """A request the annex does not allow: the HTTP status PS3.18 gives it, the Warning text
    (the standard's wording where it has one) and a message saying what exactly was wrong."""

    def __init__(self, status: int, warning: str, message: str | None = None) -> None:
        super().__init__(message or warning)
        self.status, self.warning, self.message = status, warning, message or warning


@dataclass(frozen=True)
class Event:
    """One UPS event report to every subscriber of the workitem: its type and information."""

    type_id: int
    information: Model


@dataclass
class Outcome:
    """What a transaction did: the workitem as it now is (None: unchanged), the Transaction UID
    it now holds, its events (each within MAX_EVENT_BYTES), and Warning texts for the answer."""

    model: Model | None
    transaction_uid: str | None = None
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = [bounded(event) for event in self.events]


# An event's information is queued once for each subscriber: a progress report of a 900 kB
# Progress Information Sequence to 50 AE titles queued 45 MB. The attributes table CC.2.4-1
# requires are small; what else a report carries is sent while it stays within this.
MAX_EVENT_BYTES = 16 << 10
MAX_ELEMENT_BYTES = 1 << 10


def bounded(event: Event) -> Event:
    """``event`` as it is, when its information is within MAX_EVENT_BYTES; else with what is
    larger than MAX_ELEMENT_BYTES left out (of a sequence, the first item kept, reduced alike),
    and at worst the workitem's state and readiness alone (PS3.4 CC.2.4 lets the SCP send the
    identity and state; a subscriber reads the rest with Retrieve)."""
    if len(orjson.dumps(event.information)) <= MAX_EVENT_BYTES:
        return event
    reduced = _small_parts(event.information)
    if len(orjson.dumps(reduced)) > MAX_EVENT_BYTES:
        reduced = _selected(event.information, ("ProcedureStepState", "InputReadinessState"))
    return Event(event.type_id, reduced)


def _small_parts(model: Model) -> Model:
    kept: Model = {}
    for key, value in model.items():
        if len(orjson.dumps(value)) <= MAX_ELEMENT_BYTES:
            kept[key] = value
        elif isinstance(value, dict) and value.get("vr") == "SQ" and value.get("Value"):
            first_item = value["Value"][0]
            kept[key] = {"vr": "SQ", "Value": [_small_parts(first_item) if isinstance(first_item, dict) else {}]}
    return kept


# -- reading a model ------------------------------------------------------------------------

def values(model: Model, keyword: str) -> list[Any]:
    element = model.get(T[keyword]) if keyword in T else model.get(tag(keyword))
    return list(element.get("Value") or []) if isinstance(element, dict) else []


def first(model: Model, keyword: str) -> Any:
    found = values(model, keyword)
    return found[0] if found else None


def text(model: Model, keyword: str) -> str | None:
    value = first(model, keyword)
    return value.strip() if isinstance(value, str) else None


def items(model: Model, keyword: str) -> list[Model]:
    return [item for item in values(model, keyword) if isinstance(item, dict)]


def has(model: Model, keyword: str) -> bool:
    return T[keyword] in model if keyword in T else tag(keyword) in model


def element(keyword: str, *found: Any) -> dict:
    vr = dictionary_VR(tag_for_keyword(keyword))
    return {"vr": vr, "Value": list(found)} if found else {"vr": vr}


def is_uid(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.fullmatch(value))


# -- checks -----------------------------------------------------------------------------------

def _check_shape(model: Any, where: str = "", depth: int = 0) -> None:
    """A data set as DICOM JSON gives it: tags of 8 hex digits, elements with a VR; sequences of
    data sets, at most 8 deep (what a workitem needs, and a bound on the recursion)."""
    if not isinstance(model, dict):
        raise Refused(400, "The workitem is not a DICOM JSON data set.", f"{where or 'the payload'} is not a JSON object")
    if depth > 8:
        raise Refused(400, "The workitem nests sequences too deeply.", f"{where}: sequences nest more than 8 deep")
    for key, value in model.items():
        if not (isinstance(key, str) and len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)):
            raise Refused(400, "The workitem is not a DICOM JSON data set.", f"{where}{key!r} is not a tag")
        if not isinstance(value, dict) or not isinstance(value.get("vr"), str):
            raise Refused(400, "The workitem is not a DICOM JSON data set.", f"{where}{key}: the element has no VR")
        listed = value.get("Value")
        if listed is not None and not isinstance(listed, list):
            raise Refused(400, "The workitem is not a DICOM JSON data set.", f"{where}{key}: Value is not a list")
        if value["vr"] == "SQ":
            for n, item in enumerate(listed or []):
                _check_shape(item, f"{where}{key}[{n}].", depth + 1)


def _normalized(model: Model) -> Model:
    """A copy of a checked data set with its tags upper-cased, as the rules read them
    (DICOM JSON allows either case of the hexadecimal digits)."""
    copied = {}
    for key, value in model.items():
        value = dict(value)
        if value["vr"] == "SQ" and value.get("Value"):
            value["Value"] = [_normalized(item) for item in value["Value"]]
        copied[key.upper()] = value
    return copied


def _dataset(model: Any) -> Model:
    _check_shape(model)
    return _normalized(model)


def _named(keyword: str) -> str:
    return f"{keyword} ({T.get(keyword) or tag(keyword)})"


def _check_values(model: Model, keywords: Iterable[str], status: int = 400) -> None:
    """Enumerated values and the UID and DT syntax of the attributes the annex reads."""
    for keyword in keywords:
        if not values(model, keyword):
            continue
        value = first(model, keyword)
        if keyword in ENUMERATED and value not in ENUMERATED[keyword]:
            raise Refused(status, f"Invalid value of {_named(keyword)}.",
                          f"{_named(keyword)} must be one of {', '.join(ENUMERATED[keyword])}, not {str(value)[:40]!r}")
        if keyword.endswith("DateTime") and not (isinstance(value, str) and _DT.fullmatch(value)):
            raise Refused(status, f"Invalid value of {_named(keyword)}.",
                          f"{_named(keyword)} must be a DT value (YYYYMMDDHHMMSS…), not {str(value)[:40]!r}")


def _check_codes(model: Model, keywords: Iterable[str], where: str = "") -> None:
    """Each item of a code sequence is a code: a value, its scheme (but for a URN) and its meaning."""
    for keyword in keywords:
        for n, item in enumerate(items(model, keyword)):
            named = f"{where}{keyword}[{n}]"
            if not (values(item, "CodeValue") or values(item, "LongCodeValue") or values(item, "URNCodeValue")):
                raise Refused(400, f"Missing attribute {named}.CodeValue.", f"{named} has no Code Value")
            if not values(item, "URNCodeValue") and not values(item, "CodingSchemeDesignator"):
                raise Refused(400, f"Missing attribute {named}.CodingSchemeDesignator.",
                              f"{named} has no Coding Scheme Designator")
            if not values(item, "CodeMeaning"):
                raise Refused(400, f"Missing attribute {named}.CodeMeaning.", f"{named} has no Code Meaning")


def _check_performers(model: Model) -> None:
    for n, item in enumerate(items(model, "ScheduledHumanPerformersSequence")):
        if not items(item, "HumanPerformerCodeSequence"):
            raise Refused(400, "Missing attribute ScheduledHumanPerformersSequence.HumanPerformerCodeSequence.",
                          f"ScheduledHumanPerformersSequence[{n}] has no Human Performer Code Sequence (Type 1)")
        _check_codes(item, ("HumanPerformerCodeSequence",), f"ScheduledHumanPerformersSequence[{n}].")


def _check_requests(model: Model) -> None:
    for n, item in enumerate(items(model, "ReferencedRequestSequence")):
        if not is_uid(first(item, "StudyInstanceUID")):
            raise Refused(400, "Missing attribute ReferencedRequestSequence.StudyInstanceUID.",
                          f"ReferencedRequestSequence[{n}] has no valid Study Instance UID (Type 1)")


def _check_content(model: Model) -> None:
    _check_values(model, ("InputReadinessState", "ScheduledProcedureStepPriority",
                          "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime"))
    _check_codes(model, CODE_SEQUENCES)
    _check_performers(model)
    _check_requests(model)
    study = values(model, "StudyInstanceUID")
    if study and not is_uid(study[0]):
        raise Refused(400, "Invalid value of StudyInstanceUID (0020000D).", "StudyInstanceUID is not a valid UID")


# -- the transactions -------------------------------------------------------------------------

def create(model: Any, uid: str, now: str) -> Outcome:
    """A new workitem from what an SCU sent (PS3.4 CC.2.5.1.3, PS3.18 §11.4): its Type 1
    attributes present and valid, SCHEDULED, nothing the SCP alone writes. ``uid`` is the
    workitem's (from the URL, the data set, or made by the caller); ``now`` a DT value."""
    model = copy.deepcopy(_dataset(model))
    own = first(model, "SOPInstanceUID")
    if own is not None and own != uid:
        raise Refused(400, "The workitem UID of the URL and of the data set differ.",
                      f"SOPInstanceUID {str(own)[:64]!r} differs from the workitem {uid} the URL names")
    if first(model, "TransactionUID"):
        raise Refused(400, "Invalid attribute TransactionUID (00081195).",
                      "a new workitem holds no Transaction UID: it is given when the workitem is claimed")
    for keyword in REQUIRED_AT_CREATE:
        if not values(model, keyword):
            raise Refused(400, f"Missing attribute {_named(keyword)}.",
                          f"{_named(keyword)} is required (Type 1) in a new workitem")
    if first(model, "ProcedureStepState") != SCHEDULED:
        raise Refused(400, "The provided value of UPS State was not SCHEDULED.",
                      f"a new workitem is SCHEDULED, not {str(first(model, 'ProcedureStepState'))[:20]!r}")
    for keyword in EMPTY_AT_CREATE:
        if values(model, keyword):
            raise Refused(400, f"Invalid attribute {_named(keyword)}.",
                          f"{_named(keyword)} is empty in a new workitem: its items are written while the "
                          "workitem is performed, not when it is made")
    _check_content(model)
    warnings = []
    absent = [k for k in PRESENT_AT_CREATE if not has(model, k)]
    for keyword in absent:
        model[T[keyword]] = element(keyword)
    if absent:
        warnings.append(f"Type 2 attributes absent from the workitem were added empty: {', '.join(absent)}")
    model.pop(T["TransactionUID"], None)   # Type 2 at creation, and empty (checked above)
    if not values(model, "WorklistLabel"):
        model[T["WorklistLabel"]] = element("WorklistLabel", DEFAULT_WORKLIST_LABEL)
    model[T["SOPClassUID"]] = element("SOPClassUID", PUSH_SOP_CLASS)
    model[T["SOPInstanceUID"]] = element("SOPInstanceUID", uid)
    model[T["ScheduledProcedureStepModificationDateTime"]] = element("ScheduledProcedureStepModificationDateTime", now)
    return Outcome(model, None, [Event(STATE_REPORT, state_report(model)), *assigned(model)], warnings)


def update(model: Model, held: str | None, given: str | None, changes: Any, now: str) -> Outcome:
    """Attributes of a workitem changed (N-SET, PS3.4 CC.2.6.3, PS3.18 §11.6): a SCHEDULED one
    by anyone, an IN PROGRESS one only with the Transaction UID that claimed it, a final one
    never. The statuses are §11.6.3's (400 for what table 11.6.3-1 lists there). The Transaction
    UID is ``given`` (from the query) or in the data set, as N-SET carries it (CC.2.6.2): equal
    to the lock, it changes nothing; both, they must agree."""
    changes = _dataset(changes)
    inside = text(changes, "TransactionUID")
    if inside:
        if not is_uid(inside):
            raise Refused(400, TRANSACTION_INCORRECT, f"TransactionUID {inside[:64]!r} is not a UID")
        if given and given != inside:
            raise Refused(400, TRANSACTION_INCORRECT, "the Transaction UID of the query and of the data set differ")
        given = inside
    changes.pop(T["TransactionUID"], None)
    state = first(model, "ProcedureStepState")
    if state in FINAL:
        raise Refused(400, INCONSISTENT, f"the workitem is {state}: it may no longer be updated")
    if state == SCHEDULED and given:
        raise Refused(409, INCONSISTENT, "the workitem is SCHEDULED: no Transaction UID holds it yet")
    if state == IN_PROGRESS and not given:
        raise Refused(400, TRANSACTION_MISSING, "the workitem is IN PROGRESS: the update needs the Transaction UID "
                                                "that claimed it (?transaction=)")
    if state == IN_PROGRESS and given != held:
        raise Refused(400, TRANSACTION_INCORRECT)
    for keyword in FORBIDDEN_IN_UPDATE:
        if has(changes, keyword):
            raise Refused(400, f"Invalid attribute {_named(keyword)}.",
                          f"{_named(keyword)} cannot be changed by an update" +
                          (" (Change State changes it)" if keyword == "ProcedureStepState" else ""))
    updated = copy.deepcopy(model)
    for key, value in changes.items():
        if key == T["SpecificCharacterSet"]:
            continue
        updated[key] = copy.deepcopy(value)
    for keyword in REQUIRED_AT_CREATE:
        if not values(updated, keyword):
            raise Refused(400, f"Missing attribute {_named(keyword)}.", f"{_named(keyword)} (Type 1) cannot be emptied")
    _check_content(updated)
    updated[T["ScheduledProcedureStepModificationDateTime"]] = element("ScheduledProcedureStepModificationDateTime", now)
    events = []
    if first(changes, "InputReadinessState") and first(changes, "InputReadinessState") != first(model, "InputReadinessState"):
        events.append(Event(STATE_REPORT, state_report(updated)))
    if has(changes, "ProcedureStepProgressInformationSequence"):
        events.append(Event(PROGRESS_REPORT, progress_report(updated)))
    if has(changes, "ScheduledStationNameCodeSequence") or has(changes, "ScheduledHumanPerformersSequence"):
        events += assigned(updated)
    return Outcome(updated, held, events)


def change_state(model: Model, held: str | None, request: Any, now: str) -> Outcome:
    """Change UPS State (PS3.4 CC.2.1.3, table CC.1.1-2; PS3.18 §11.7): claim a SCHEDULED
    workitem with a new Transaction UID, or with that UID complete (final-state requirements
    met) or cancel the IN PROGRESS one it claimed."""
    request = _dataset(request)
    requested, given = text(request, "ProcedureStepState"), text(request, "TransactionUID")
    state = first(model, "ProcedureStepState")
    if requested not in (IN_PROGRESS, COMPLETED, CANCELED):
        raise Refused(400, "The requested Procedure Step State is not valid.",
                      "ProcedureStepState (00741000) must be IN PROGRESS, COMPLETED or CANCELED, not "
                      f"{str(requested)[:20]!r} (a workitem becomes SCHEDULED only when it is created)")
    if given is not None and not is_uid(given):
        raise Refused(400, "The Transaction UID is not a valid UID.", f"TransactionUID {given[:64]!r} is not a UID")
    if requested == state and requested in FINAL:
        return Outcome(None, held, warnings=[ALREADY.format(requested)])
    if requested == IN_PROGRESS:
        if state != SCHEDULED:
            raise Refused(409, INCONSISTENT, f"the workitem is {state}: only a SCHEDULED one can be claimed")
        if given is None:
            raise Refused(400, TRANSACTION_MISSING, "claiming a workitem needs the Transaction UID that will hold it")
        updated = _with_state(model, IN_PROGRESS)
        return Outcome(updated, given, [Event(STATE_REPORT, state_report(updated))])
    if state != IN_PROGRESS:
        raise Refused(409, INCONSISTENT, f"the workitem is {state}: only an IN PROGRESS one can become {requested}"
                      + (" (a SCHEDULED one is canceled by a cancellation request)" if state == SCHEDULED else ""))
    if given is None:
        raise Refused(409, TRANSACTION_MISSING)
    if given != held:
        raise Refused(409, TRANSACTION_INCORRECT)
    if requested == COMPLETED:
        unmet = completion_unmet(model)
        if unmet:
            raise Refused(409, INCONSISTENT, f"the final state requirements of COMPLETED are not met: {unmet}")
        updated = _with_state(model, COMPLETED)
    else:
        updated = _canceled(model, now)
    return Outcome(updated, None, [Event(STATE_REPORT, state_report(updated))])


def request_cancel(model: Model, request: Any, now: str, performer_reachable: bool) -> Outcome:
    """Request Cancellation (PS3.4 CC.2.2.3, PS3.18 §11.8): a SCHEDULED workitem is canceled
    by the SCP itself (IN PROGRESS, then CANCELED, two state reports); for an IN PROGRESS one
    its subscribers are told (UPS Cancel Requested) and its performer decides; ``performer_reachable``
    says whether anyone subscribes to it, without which the request could reach nobody."""
    request = _dataset(request)
    state = first(model, "ProcedureStepState")
    reason = {T[k]: request[T[k]] for k in ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence",
                                             "ContactURI", "ContactDisplayName") if T[k] in request}
    _check_codes(reason, ("ProcedureStepDiscontinuationReasonCodeSequence",))
    if state == CANCELED:
        return Outcome(None, None, warnings=[ALREADY.format(CANCELED)])
    if state == COMPLETED:
        raise Refused(409, ALREADY_COMPLETED)
    if state == IN_PROGRESS:
        if not performer_reachable:
            raise Refused(409, PERFORMER_UNREACHABLE)
        return Outcome(None, None, [Event(CANCEL_REQUESTED, reason)])
    claimed = _with_state(model, IN_PROGRESS)
    canceled = _canceled(claimed, now, reason)
    return Outcome(canceled, None, [Event(STATE_REPORT, state_report(claimed)), Event(STATE_REPORT, state_report(canceled))])


def completion_unmet(model: Model) -> str | None:
    """What a workitem lacks to be COMPLETED (PS3.4 table CC.2.5-3, Final State column): the
    Performed Procedure Sequence with its start and end and the station and workitem performed."""
    performed = items(model, "UnifiedProcedureStepPerformedProcedureSequence")
    if not performed:
        return "UnifiedProcedureStepPerformedProcedureSequence (00741216) has no item"
    item = performed[0]
    for keyword in ("PerformedProcedureStepStartDateTime", "PerformedProcedureStepEndDateTime"):
        if not values(item, keyword):
            return f"UnifiedProcedureStepPerformedProcedureSequence lacks {_named(keyword)}"
    for keyword in ("PerformedStationNameCodeSequence", "PerformedWorkitemCodeSequence"):
        if not items(item, keyword):
            return f"UnifiedProcedureStepPerformedProcedureSequence lacks {_named(keyword)}"
    return None


def _with_state(model: Model, state: str) -> Model:
    updated = copy.deepcopy(model)
    updated[T["ProcedureStepState"]] = element("ProcedureStepState", state)
    return updated


def _canceled(model: Model, now: str, reason: Model | None = None) -> Model:
    """CANCELED, its final-state requirement met by the SCP: the Progress Information Sequence
    with the Cancellation DateTime (and the requester's reason and contact, when given)."""
    updated = _with_state(model, CANCELED)
    progress = items(updated, "ProcedureStepProgressInformationSequence")
    item = copy.deepcopy(progress[0]) if progress else {}
    if not values(item, "ProcedureStepCancellationDateTime"):
        item[T["ProcedureStepCancellationDateTime"]] = element("ProcedureStepCancellationDateTime", now)
    reason = reason or {}
    for keyword in ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence"):
        if T[keyword] in reason and not values(item, keyword):
            item[T[keyword]] = copy.deepcopy(reason[T[keyword]])
    contact = {T[k]: copy.deepcopy(reason[T[k]]) for k in ("ContactURI", "ContactDisplayName") if T[k] in reason}
    if contact and not items(item, "ProcedureStepCommunicationsURISequence"):
        item[T["ProcedureStepCommunicationsURISequence"]] = {"vr": "SQ", "Value": [contact]}
    updated[T["ProcedureStepProgressInformationSequence"]] = {"vr": "SQ", "Value": [item]}
    return updated


# -- event information (PS3.4 table CC.2.4-1) -------------------------------------------------

def _selected(model: Model, keywords: Iterable[str]) -> Model:
    return {T[k]: copy.deepcopy(model[T[k]]) for k in keywords if T[k] in model}


def state_report(model: Model) -> Model:
    selected = ["ProcedureStepState", "InputReadinessState"]
    if first(model, "ProcedureStepState") == CANCELED:
        progress = items(model, "ProcedureStepProgressInformationSequence")
        reported = _selected(model, selected)
        if progress:
            reported.update(_selected(progress[0], ("ReasonForCancellation",
                                                    "ProcedureStepDiscontinuationReasonCodeSequence")))
        return reported
    return _selected(model, selected)


def progress_report(model: Model) -> Model:
    return _selected(model, ("ProcedureStepState", "ProcedureStepProgressInformationSequence"))


def assigned(model: Model) -> list[Event]:
    """UPS Assigned, when the workitem names the station or the people to perform it."""
    if not (items(model, "ScheduledStationNameCodeSequence") or items(model, "ScheduledHumanPerformersSequence")):
        return []
    return [Event(ASSIGNED, _selected(model, ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence",
                                              "HumanPerformerOrganization", "InputReadinessState")))]


def scp_status_change(status: str, subscriptions_kept: bool = True) -> Event:
    """SCP Status Change: the service going down or restarted, its subscriptions kept (WARM START)."""
    return Event(SCP_STATUS_CHANGE, {
        T["SCPStatus"]: element("SCPStatus", status),
        T["SubscriptionListStatus"]: element("SubscriptionListStatus", "WARM START" if subscriptions_kept else "COLD START"),
        T["UnifiedProcedureStepListStatus"]: element("UnifiedProcedureStepListStatus",
                                                     "WARM START" if subscriptions_kept else "COLD START"),
    })


def event_report(event_type: int, workitem_uid: str, information: Model, message_id: int) -> Model:
    """The DICOM JSON of one event report as sent over the event channel (PS3.18 §8.10.5): the
    N-EVENT-REPORT command attributes, then the event information."""
    report = {
        "00000002": {"vr": "UI", "Value": [EVENT_SOP_CLASS]},
        "00000100": {"vr": "US", "Value": [0x0100]},
        "00000110": {"vr": "US", "Value": [message_id % 65536]},
        "00000800": {"vr": "US", "Value": [0x0102]},
        "00001000": {"vr": "UI", "Value": [workitem_uid]},
        "00001002": {"vr": "US", "Value": [event_type]},
    }
    report.update(information)
    return report


def without_transaction(model: Model) -> Model:
    """The workitem as it is shown: never its Transaction UID (PS3.18 §11.5.3.3)."""
    return {k: v for k, v in model.items() if k != T["TransactionUID"]}

