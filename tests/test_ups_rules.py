"""The UPS state machine and attribute rules (service.worklist.ups), with no HTTP: every
transition of PS3.4 table CC.1.1-2, allowed and refused, with the status and Warning
PS3.18 §11.6–11.8 give it."""
from __future__ import annotations

import copy

import pytest

from service.worklist import ups

NOW = "20261203120000.000000+0000"
HELD = "1.2.826.0.1.3680043.10.1"
OTHER = "1.2.826.0.1.3680043.10.2"


def code(value: str, meaning: str = "a code") -> dict:
    return {"00080100": {"vr": "SH", "Value": [value]}, "00080102": {"vr": "SH", "Value": ["99TEST"]},
            "00080104": {"vr": "LO", "Value": [meaning]}}


def new_workitem(**changes) -> dict:
    model = {
        "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
        "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
        "00741204": {"vr": "LO", "Value": ["Lung nodule detection"]},
        "00404005": {"vr": "DT", "Value": ["20261203120000"]},
        "00404041": {"vr": "CS", "Value": ["READY"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["P-1"]},
        "00404025": {"vr": "SQ", "Value": [code("CT-AI-1", "AI node one")]},
    }
    for keyword, value in changes.items():
        tag = ups.tag(keyword)
        if value is None:
            model.pop(tag, None)
        else:
            model[tag] = value
    return model


def in_state(state: str) -> dict:
    model = ups.create(new_workitem(), "1.2.3", NOW).model
    model[ups.T["ProcedureStepState"]] = ups.element("ProcedureStepState", state)
    return model


def performed() -> dict:
    return {"00741216": {"vr": "SQ", "Value": [{
        "00404050": {"vr": "DT", "Value": ["20261203120000"]}, "00404051": {"vr": "DT", "Value": ["20261203121500"]},
        "00404028": {"vr": "SQ", "Value": [code("CT-AI-1")]}, "00404019": {"vr": "SQ", "Value": [code("LUNG")]}}]}}


def state_request(state: str | None, transaction: str | None) -> dict:
    request = {}
    if state is not None:
        request["00741000"] = {"vr": "CS", "Value": [state]}
    if transaction is not None:
        request["00081195"] = {"vr": "UI", "Value": [transaction]}
    return request


# -- creation ---------------------------------------------------------------------------------

def test_a_new_workitem_is_scheduled_with_its_identity_and_events():
    outcome = ups.create(new_workitem(), "1.2.3", NOW)
    model = outcome.model
    assert ups.first(model, "SOPClassUID") == ups.PUSH_SOP_CLASS
    assert ups.first(model, "SOPInstanceUID") == "1.2.3"
    assert ups.first(model, "ScheduledProcedureStepModificationDateTime") == NOW
    assert [e.type_id for e in outcome.events] == [ups.STATE_REPORT, ups.ASSIGNED]
    assert ups.first(outcome.events[0].information, "ProcedureStepState") == "SCHEDULED"
    assert ups.has(model, "ReferencedRequestSequence") and not ups.values(model, "ReferencedRequestSequence")
    assert "ReferencedRequestSequence" in outcome.warnings[0]


@pytest.mark.parametrize("changes, warning", [
    ({"ProcedureStepLabel": None}, "Missing attribute ProcedureStepLabel"),
    ({"ScheduledProcedureStepPriority": None}, "Missing attribute ScheduledProcedureStepPriority"),
    ({"ScheduledProcedureStepStartDateTime": None}, "Missing attribute ScheduledProcedureStepStartDateTime"),
    ({"InputReadinessState": None}, "Missing attribute InputReadinessState"),
    ({"ProcedureStepState": None}, "Missing attribute ProcedureStepState"),
    ({"ProcedureStepState": {"vr": "CS", "Value": ["IN PROGRESS"]}}, "was not SCHEDULED"),
    ({"InputReadinessState": {"vr": "CS", "Value": ["MAYBE"]}}, "Invalid value of InputReadinessState"),
    ({"ScheduledProcedureStepPriority": {"vr": "CS", "Value": ["URGENT"]}}, "Invalid value"),
    ({"ScheduledProcedureStepStartDateTime": {"vr": "DT", "Value": ["tomorrow"]}}, "Invalid value"),
    ({"TransactionUID": {"vr": "UI", "Value": [HELD]}}, "Invalid attribute TransactionUID"),
    ({"ProcedureStepProgressInformationSequence": {"vr": "SQ", "Value": [
        {"00741004": {"vr": "DS", "Value": ["50"]}}]}}, "Invalid attribute ProcedureStepProgressInformationSequence"),
    ({"UnifiedProcedureStepPerformedProcedureSequence": performed()["00741216"]},
     "Invalid attribute UnifiedProcedureStepPerformedProcedureSequence"),
    ({"ScheduledStationNameCodeSequence": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["X"]}}]}},
     "CodingSchemeDesignator"),
    ({"ScheduledHumanPerformersSequence": {"vr": "SQ", "Value": [{}]}}, "HumanPerformerCodeSequence"),
    ({"ReferencedRequestSequence": {"vr": "SQ", "Value": [{"00080050": {"vr": "SH", "Value": ["A1"]}}]}},
     "ReferencedRequestSequence.StudyInstanceUID"),
    ({"SOPInstanceUID": {"vr": "UI", "Value": ["9.9.9"]}}, "differ"),
])
def test_creation_refuses_what_the_annex_forbids(changes, warning):
    with pytest.raises(ups.Refused) as refused:
        ups.create(new_workitem(**changes), "1.2.3", NOW)
    assert refused.value.status == 400
    assert warning in refused.value.warning


@pytest.mark.parametrize("model", [[], "text", {"0010": {"vr": "PN"}}, {"00100010": {"Value": []}},
                                   {"00100010": {"vr": "PN", "Value": "Doe"}}])
def test_creation_refuses_what_is_not_a_dicom_json_data_set(model):
    with pytest.raises(ups.Refused) as refused:
        ups.create(model, "1.2.3", NOW)
    assert refused.value.status == 400


def test_sequences_nested_deeper_than_the_bound_are_refused():
    deep: dict = {}
    for _ in range(12):
        deep = {"0040A730": {"vr": "SQ", "Value": [deep]}}
    with pytest.raises(ups.Refused, match="more than 8 deep"):
        ups.create(new_workitem(ContentSequence=deep["0040A730"]), "1.2.3", NOW)


# -- Change UPS State: every state × every requested state -----------------------------------

# (state, requested, transaction given, status, Warning or None, state after)
TRANSITIONS = [
    ("SCHEDULED", "IN PROGRESS", OTHER, 200, None, "IN PROGRESS"),
    ("SCHEDULED", "IN PROGRESS", None, 400, ups.TRANSACTION_MISSING, None),
    ("SCHEDULED", "COMPLETED", HELD, 409, ups.INCONSISTENT, None),
    ("SCHEDULED", "CANCELED", HELD, 409, ups.INCONSISTENT, None),
    ("SCHEDULED", "SCHEDULED", HELD, 400, "not valid", None),
    ("IN PROGRESS", "IN PROGRESS", HELD, 409, ups.INCONSISTENT, None),
    ("IN PROGRESS", "IN PROGRESS", OTHER, 409, ups.INCONSISTENT, None),
    ("IN PROGRESS", "COMPLETED", HELD, 200, None, "COMPLETED"),
    ("IN PROGRESS", "COMPLETED", OTHER, 409, ups.TRANSACTION_INCORRECT, None),
    ("IN PROGRESS", "COMPLETED", None, 409, ups.TRANSACTION_MISSING, None),
    ("IN PROGRESS", "CANCELED", HELD, 200, None, "CANCELED"),
    ("IN PROGRESS", "CANCELED", OTHER, 409, ups.TRANSACTION_INCORRECT, None),
    ("IN PROGRESS", "CANCELED", None, 409, ups.TRANSACTION_MISSING, None),
    ("IN PROGRESS", "SCHEDULED", HELD, 400, "not valid", None),
    ("COMPLETED", "IN PROGRESS", OTHER, 409, ups.INCONSISTENT, None),
    ("COMPLETED", "COMPLETED", HELD, 200, "already in the requested state of COMPLETED", "COMPLETED"),
    ("COMPLETED", "CANCELED", HELD, 409, ups.INCONSISTENT, None),
    ("CANCELED", "IN PROGRESS", OTHER, 409, ups.INCONSISTENT, None),
    ("CANCELED", "CANCELED", HELD, 200, "already in the requested state of CANCELED", "CANCELED"),
    ("CANCELED", "COMPLETED", HELD, 409, ups.INCONSISTENT, None),
]


@pytest.mark.parametrize("state, requested, given, status, warning, after", TRANSITIONS)
def test_change_state(state, requested, given, status, warning, after):
    model = {**in_state(state), **performed()}
    held = HELD if state == "IN PROGRESS" else None
    request = state_request(requested, given)
    if status != 200:
        with pytest.raises(ups.Refused) as refused:
            ups.change_state(model, held, request, NOW)
        assert refused.value.status == status and warning in refused.value.warning
        return
    outcome = ups.change_state(model, held, request, NOW)
    if warning:   # already there: nothing changes, nothing is reported
        assert outcome.model is None and not outcome.events and warning in outcome.warnings[0]
        return
    assert ups.first(outcome.model, "ProcedureStepState") == after
    assert [e.type_id for e in outcome.events] == [ups.STATE_REPORT]
    assert ups.first(outcome.events[0].information, "ProcedureStepState") == after
    assert outcome.transaction_uid == (given if after == "IN PROGRESS" else None)
    assert model == {**in_state(state), **performed()}, "the model given is not changed in place"


def test_every_pair_of_states_is_in_the_table():
    pairs = {(s, r) for s, r, *_ in TRANSITIONS}
    assert pairs >= {(s, r) for s in ups.STATES for r in ups.STATES if r != "SCHEDULED"}


@pytest.mark.parametrize("missing, named", [
    ("00741216", "has no item"),
    ("00404050", "PerformedProcedureStepStartDateTime"),
    ("00404051", "PerformedProcedureStepEndDateTime"),
    ("00404028", "PerformedStationNameCodeSequence"),
    ("00404019", "PerformedWorkitemCodeSequence"),
])
def test_completion_needs_the_final_state_requirements(missing, named):
    done = performed()
    if missing == "00741216":
        done = {}
    else:
        del done["00741216"]["Value"][0][missing]
    model = {**in_state("IN PROGRESS"), **done}
    with pytest.raises(ups.Refused) as refused:
        ups.change_state(model, HELD, state_request("COMPLETED", HELD), NOW)
    assert refused.value.status == 409 and named in refused.value.message


def test_cancel_fills_the_cancellation_datetime():
    outcome = ups.change_state(in_state("IN PROGRESS"), HELD, state_request("CANCELED", HELD), NOW)
    progress = ups.items(outcome.model, "ProcedureStepProgressInformationSequence")[0]
    assert ups.first(progress, "ProcedureStepCancellationDateTime") == NOW


def test_a_transaction_uid_that_is_no_uid_is_refused():
    with pytest.raises(ups.Refused) as refused:
        ups.change_state(in_state("SCHEDULED"), None, state_request("IN PROGRESS", "not-a-uid"), NOW)
    assert refused.value.status == 400


# -- updates ----------------------------------------------------------------------------------

PROGRESS = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [40]}}]}}


@pytest.mark.parametrize("state, given, status, warning", [
    ("SCHEDULED", None, 200, None),
    ("SCHEDULED", HELD, 409, ups.INCONSISTENT),
    ("IN PROGRESS", HELD, 200, None),
    ("IN PROGRESS", None, 400, ups.TRANSACTION_MISSING),
    ("IN PROGRESS", OTHER, 400, ups.TRANSACTION_INCORRECT),
    ("COMPLETED", HELD, 400, ups.INCONSISTENT),
    ("CANCELED", None, 400, ups.INCONSISTENT),
])
def test_update_by_state_and_transaction(state, given, status, warning):
    model, held = in_state(state), HELD if state == "IN PROGRESS" else None
    if status != 200:
        with pytest.raises(ups.Refused) as refused:
            ups.update(model, held, given, PROGRESS, NOW)
        assert (refused.value.status, refused.value.warning) == (status, warning)
        return
    outcome = ups.update(model, held, given, PROGRESS, NOW)
    assert ups.items(outcome.model, "ProcedureStepProgressInformationSequence")
    assert [e.type_id for e in outcome.events] == [ups.PROGRESS_REPORT]


@pytest.mark.parametrize("keyword", ["PatientName", "PatientID", "ProcedureStepState", "SOPInstanceUID",
                                     "ReferencedRequestSequence"])
def test_update_refuses_what_it_may_not_change(keyword):
    changes = {ups.tag(keyword): {"vr": "LO", "Value": ["x"]}}
    with pytest.raises(ups.Refused) as refused:
        ups.update(in_state("SCHEDULED"), None, None, changes, NOW)
    assert refused.value.status == 400 and keyword in refused.value.warning


def test_update_cannot_empty_a_type_1_attribute():
    with pytest.raises(ups.Refused, match="cannot be emptied"):
        ups.update(in_state("SCHEDULED"), None, None, {"00741204": {"vr": "LO"}}, NOW)


def test_update_events_follow_what_changed():
    readiness = {"00404041": {"vr": "CS", "Value": ["INCOMPLETE"]}}
    assert [e.type_id for e in ups.update(in_state("SCHEDULED"), None, None, readiness, NOW).events] == [ups.STATE_REPORT]
    station = {"00404025": {"vr": "SQ", "Value": [code("CT-AI-2")]}}
    assert [e.type_id for e in ups.update(in_state("SCHEDULED"), None, None, station, NOW).events] == [ups.ASSIGNED]
    comment = {"00400400": {"vr": "LT", "Value": ["a note"]}}
    outcome = ups.update(in_state("SCHEDULED"), None, None, comment, NOW)
    assert not outcome.events and ups.first(outcome.model, "CommentsOnTheScheduledProcedureStep") == "a note"


# -- cancellation requests --------------------------------------------------------------------

REASON = {"00741238": {"vr": "LT", "Value": ["patient left"]}, "0074100C": {"vr": "LO", "Value": ["Dr Who"]}}


def test_a_scheduled_workitem_is_canceled_by_the_scp_in_two_steps():
    outcome = ups.request_cancel(in_state("SCHEDULED"), REASON, NOW, performer_reachable=False)
    assert ups.first(outcome.model, "ProcedureStepState") == "CANCELED"
    assert [ups.first(e.information, "ProcedureStepState") for e in outcome.events] == ["IN PROGRESS", "CANCELED"]
    progress = ups.items(outcome.model, "ProcedureStepProgressInformationSequence")[0]
    assert ups.first(progress, "ReasonForCancellation") == "patient left"
    assert ups.first(ups.items(progress, "ProcedureStepCommunicationsURISequence")[0], "ContactDisplayName") == "Dr Who"


def test_an_in_progress_workitem_gets_a_cancel_requested_event_for_its_performer():
    outcome = ups.request_cancel(in_state("IN PROGRESS"), REASON, NOW, performer_reachable=True)
    assert outcome.model is None
    assert [e.type_id for e in outcome.events] == [ups.CANCEL_REQUESTED]
    assert outcome.events[0].information["00741238"]["Value"] == ["patient left"]


@pytest.mark.parametrize("state, reachable, status, warning", [
    ("IN PROGRESS", False, 409, ups.PERFORMER_UNREACHABLE),
    ("COMPLETED", True, 409, ups.ALREADY_COMPLETED),
])
def test_cancellation_requests_refused(state, reachable, status, warning):
    with pytest.raises(ups.Refused) as refused:
        ups.request_cancel(in_state(state), {}, NOW, reachable)
    assert (refused.value.status, refused.value.warning) == (status, warning)


def test_a_canceled_workitem_takes_the_request_with_a_warning():
    outcome = ups.request_cancel(in_state("CANCELED"), {}, NOW, False)
    assert outcome.model is None and "CANCELED" in outcome.warnings[0]


# -- event reports ----------------------------------------------------------------------------

def test_an_event_report_carries_the_n_event_report_command_and_the_information():
    information = ups.state_report(in_state("SCHEDULED"))
    report = ups.event_report(ups.STATE_REPORT, "1.2.3", copy.deepcopy(information), 70_000)
    assert report["00000002"]["Value"] == [ups.EVENT_SOP_CLASS]
    assert report["00000100"]["Value"] == [0x0100]
    assert report["00000110"]["Value"] == [70_000 % 65536]
    assert report["00001000"]["Value"] == ["1.2.3"]
    assert report["00001002"]["Value"] == [1]
    assert report["00741000"]["Value"] == ["SCHEDULED"] and report["00404041"]["Value"] == ["READY"]


def test_the_transaction_uid_is_never_shown():
    model = {**in_state("IN PROGRESS"), "00081195": {"vr": "UI", "Value": [HELD]}}
    assert "00081195" not in ups.without_transaction(model)


def test_tags_in_lower_case_are_read_as_tags():
    request = {"0040a370": {"vr": "SQ", "Value": [{"0020000d": {"vr": "UI", "Value": ["1.2.7"]}}]}}
    model = {**{k.lower(): v for k, v in new_workitem().items()}, **request}
    outcome = ups.create(model, "1.2.3", NOW)
    assert ups.first(ups.items(outcome.model, "ReferencedRequestSequence")[0], "StudyInstanceUID") == "1.2.7"
    changes = {"0074100e": {"vr": "SQ", "Value": []}, "00741204": {"vr": "LO", "Value": ["relabelled"]}}
    updated = ups.update(outcome.model, None, None, changes, NOW).model
    assert "0074100E" in updated and ups.first(updated, "ProcedureStepLabel") == "relabelled"


# -- table CC.2.5-3, N-CREATE column, row by row where ups.py differed from it -----------------

@pytest.mark.parametrize("keyword", ["ProcedureStepProgressInformationSequence",
                                     "UnifiedProcedureStepPerformedProcedureSequence"])
@pytest.mark.parametrize("empty", [{"vr": "SQ"}, {"vr": "SQ", "Value": []}])
def test_the_performance_sequences_are_taken_empty_at_creation(keyword, empty):
    """Type 2 at N-CREATE (dcm4chee's creation form sends both, empty): refused before."""
    outcome = ups.create(new_workitem(**{keyword: empty}), "1.2.3", NOW)
    assert ups.has(outcome.model, keyword) and not ups.values(outcome.model, keyword)


@pytest.mark.parametrize("keyword", ["IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
                                     "OtherPatientIDsSequence", "AdmittingDiagnosesDescription",
                                     "AdmittingDiagnosesCodeSequence", "ScheduledProcessingParametersSequence",
                                     "ProcedureStepProgressInformationSequence",
                                     "UnifiedProcedureStepPerformedProcedureSequence"])
def test_each_type_2_attribute_of_the_table_is_added_empty_when_absent(keyword):
    """Rows of table CC.2.5-3 that are Type 2 at N-CREATE and were not in PRESENT_AT_CREATE."""
    outcome = ups.create(new_workitem(), "1.2.3", NOW)
    assert ups.has(outcome.model, keyword) and not ups.values(outcome.model, keyword)
    assert keyword in outcome.warnings[0].split(": ", 1)[1].split(", ")
    given = ups.create(new_workitem(**{keyword: ups.element(keyword)}), "1.2.3", NOW)
    assert keyword not in given.warnings[0].split(": ", 1)[1].split(", ")


def test_the_transaction_uid_is_taken_empty_at_creation_and_never_kept():
    """Type 2 at N-CREATE, and empty: a value is refused (test above), an empty one is taken."""
    outcome = ups.create(new_workitem(TransactionUID={"vr": "UI"}), "1.2.3", NOW)
    assert not ups.has(outcome.model, "TransactionUID")


def test_the_worklist_label_is_the_scps_default_when_the_scu_gives_none():
    """Type 3 for the SCU, 1 for the SCP: the SCP fills in a default."""
    assert ups.first(ups.create(new_workitem(), "1.2.3", NOW).model, "WorklistLabel") == ups.DEFAULT_WORKLIST_LABEL
    label = {"vr": "LO", "Value": ["CT reading"]}
    assert ups.first(ups.create(new_workitem(WorklistLabel=label), "1.2.3", NOW).model, "WorklistLabel") == "CT reading"


# -- the Transaction UID of an update, in the data set as N-SET carries it ---------------------

def _with_transaction(uid: str | None) -> dict:
    return {**PROGRESS, **({"00081195": {"vr": "UI", "Value": [uid]}} if uid else {})}


@pytest.mark.parametrize("query, inside, status, warning", [
    (None, HELD, 200, None),                             # the lock's own, in the data set: nothing changes
    (HELD, HELD, 200, None),                             # in both, the same
    (None, OTHER, 400, ups.TRANSACTION_INCORRECT),       # another
    (HELD, OTHER, 400, ups.TRANSACTION_INCORRECT),       # the query and the data set differ
    (None, "1..2", 400, ups.TRANSACTION_INCORRECT),      # not a UID
])
def test_an_update_takes_the_transaction_uid_from_the_data_set(query, inside, status, warning):
    model = in_state("IN PROGRESS")
    if status != 200:
        with pytest.raises(ups.Refused) as refused:
            ups.update(model, HELD, query, _with_transaction(inside), NOW)
        assert (refused.value.status, refused.value.warning) == (status, warning)
        return
    outcome = ups.update(model, HELD, query, _with_transaction(inside), NOW)
    assert outcome.transaction_uid == HELD and not ups.has(outcome.model, "TransactionUID")
    assert ups.items(outcome.model, "ProcedureStepProgressInformationSequence")


def test_a_transaction_uid_in_the_update_of_a_scheduled_workitem_is_inconsistent():
    with pytest.raises(ups.Refused) as refused:
        ups.update(in_state("SCHEDULED"), None, None, _with_transaction(HELD), NOW)
    assert (refused.value.status, refused.value.warning) == (409, ups.INCONSISTENT)


# -- the size of an event report ----------------------------------------------------------------

def _large_progress(kilobytes: int) -> dict:
    parameters = [{"0040A160": {"vr": "UT", "Value": ["x" * 1000]}} for _ in range(kilobytes)]
    return {"00741002": {"vr": "SQ", "Value": [{
        "00741004": {"vr": "DS", "Value": [40]}, "00741006": {"vr": "ST", "Value": ["Reconstructing"]},
        "00741007": {"vr": "SQ", "Value": parameters}}]}}


def test_a_large_progress_report_is_queued_within_the_bound():
    """A 900 kB Progress Information Sequence made a 900 kB event for each subscriber."""
    outcome = ups.update(in_state("IN PROGRESS"), HELD, HELD, _large_progress(900), NOW)
    [event] = outcome.events
    assert event.type_id == ups.PROGRESS_REPORT
    import orjson
    assert len(orjson.dumps(event.information)) <= ups.MAX_EVENT_BYTES
    [item] = ups.items(event.information, "ProcedureStepProgressInformationSequence")   # Type 1, kept
    assert ups.first(item, "ProcedureStepProgress") == 40 and ups.text(item, "ProcedureStepProgressDescription")
    assert ups.items(outcome.model, "ProcedureStepProgressInformationSequence")[0]["00741007"]["Value"].__len__() == 900


def test_a_small_event_is_sent_whole_and_any_event_is_bounded():
    outcome = ups.update(in_state("IN PROGRESS"), HELD, HELD, _large_progress(3), NOW)
    assert len(outcome.events[0].information["00741002"]["Value"][0]["00741007"]["Value"]) == 3   # 3 kB: whole
    huge = ups.Event(ups.STATE_REPORT, {"00741000": {"vr": "CS", "Value": ["CANCELED"]},
                                        "00404041": {"vr": "CS", "Value": ["READY"]},
                                        **{f"0009{n:04X}": {"vr": "LO", "Value": ["y" * 60]} for n in range(1000)}})
    reduced = ups.bounded(huge).information
    assert set(reduced) == {"00741000", "00404041"}   # at worst, the state alone
