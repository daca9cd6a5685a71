"""UPS-RS through the Flask app, on SQLite and PostgreSQL: every resource, its errors, the
search keys, subscriptions and the events they queue, and concurrent claims."""
from __future__ import annotations

import json
import threading
import time

import pytest

from service import create_app
from service.auth import hash_key
from service.config import Peer
from service.worklist import ups
from tests.conftest import API_KEY, PEER, make_config, sweep_days_later
from tests.test_ups_rules import code, new_workitem, performed

JSON = "application/dicom+json"
WORKLIST = ups.GLOBAL_SUBSCRIPTION
FILTERED = ups.FILTERED_SUBSCRIPTION
OTHER_KEY = "o" * 40


@pytest.fixture
def ups_app(tmp_path, catalog_url):
    peers = (Peer(PEER, hash_key(API_KEY), frozenset({"read", "store", "worklist"})),
             Peer("other", hash_key(OTHER_KEY), frozenset({"read", "worklist"})),
             Peer("reader", hash_key("r" * 40), frozenset({"read", "store"})))
    return create_app(make_config(tmp_path, catalog_url=catalog_url, peers=peers))


def client_of(app, key: str = API_KEY):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture
def client(ups_app):
    return client_of(ups_app)


def create(client, uid: str, **changes):
    return client.post(f"/dicom-web/workitems?{uid}", data=json.dumps(new_workitem(**changes)), content_type=JSON)


def state(client, uid: str, new_state: str, transaction: str | None):
    body = {"00741000": {"vr": "CS", "Value": [new_state]}}
    if transaction:
        body["00081195"] = {"vr": "UI", "Value": [transaction]}
    return client.put(f"/dicom-web/workitems/{uid}/state", data=json.dumps(body), content_type=JSON)


def waiting(app, title: str) -> list[tuple[int, str, str | None]]:
    """(event type, workitem, state reported) of what waits for ``title``."""
    return [(e.event_type, e.workitem_uid, ups.first(e.information, "ProcedureStepState"))
            for e in app.extensions["worklist"].waiting(title, 1000)]


def warnings(response) -> list[str]:
    return response.headers.getlist("Warning")


# -- create and retrieve ----------------------------------------------------------------------

def test_create_then_retrieve(client):
    r = create(client, "1.2.3.4")
    assert r.status_code == 201, r.get_data()
    assert r.headers["Location"].endswith("/dicom-web/workitems/1.2.3.4")
    assert any("Type 2 attributes" in w for w in warnings(r))
    r = client.get("/dicom-web/workitems/1.2.3.4")
    assert r.status_code == 200 and r.mimetype == JSON
    model = r.get_json()
    assert model["00741000"]["Value"] == ["SCHEDULED"] and model["00080018"]["Value"] == ["1.2.3.4"]
    assert model["00080016"]["Value"] == [ups.PUSH_SOP_CLASS]
    r = client.get("/dicom-web/workitems/1.2.3.4", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 200 and b"<NativeDicomModel" in r.get_data()


@pytest.mark.parametrize("query", ["workitem=1.2.3.5", "AffectedSOPInstanceUID=1.2.3.5", "1.2.3.5"])
def test_the_workitem_uid_from_the_query(client, query):
    r = client.post(f"/dicom-web/workitems?{query}", data=json.dumps(new_workitem()), content_type=JSON)
    assert r.status_code == 201 and r.headers["Location"].endswith("/1.2.3.5")


def test_the_workitem_uid_from_the_data_set_or_made_by_the_server(client):
    r = client.post("/dicom-web/workitems", data=json.dumps(new_workitem(SOPInstanceUID={"vr": "UI", "Value": ["1.2.3.6"]})),
                    content_type=JSON)
    assert r.status_code == 201 and r.headers["Location"].endswith("/1.2.3.6")
    r = client.post("/dicom-web/workitems", data=json.dumps(new_workitem()), content_type=JSON)
    assert r.status_code == 201 and r.headers["Location"].rsplit("/", 1)[1].startswith("2.25.")


def test_create_from_xml(client):
    from service.wire.dicom_xml import json_to_xml

    r = client.post("/dicom-web/workitems?1.2.3.7", data=json_to_xml(new_workitem()), content_type="application/dicom+xml")
    assert r.status_code == 201
    assert client.get("/dicom-web/workitems/1.2.3.7").get_json()["00741204"]["Value"] == ["Lung nodule detection"]


@pytest.mark.parametrize("path, body, content_type, status", [
    ("/dicom-web/workitems?1.2.3", b"{", JSON, 400),
    ("/dicom-web/workitems?1.2.3", b"[1, 2]", JSON, 400),
    ("/dicom-web/workitems?1.2.3", b"{}", "text/plain", 415),
    ("/dicom-web/workitems?1.2.3", b"<x", "application/dicom+xml", 400),
    ("/dicom-web/workitems?1.2.3", b"{}", JSON, 400),                           # nothing of Type 1
    ("/dicom-web/workitems?not.a.uid", json.dumps(new_workitem()).encode(), JSON, 400),
    ("/dicom-web/workitems?1.2&3.4", json.dumps(new_workitem()).encode(), JSON, 400),   # two UIDs
    (f"/dicom-web/workitems?{WORKLIST}", json.dumps(new_workitem()).encode(), JSON, 400),
])
def test_create_refuses(client, path, body, content_type, status):
    r = client.post(path, data=body, content_type=content_type)
    assert r.status_code == status, r.get_data()
    assert r.get_json()["message"]


def test_create_refusals_name_the_attribute_in_the_warning(client):
    r = create(client, "1.2.3", InputReadinessState=None)
    assert r.status_code == 400 and "InputReadinessState" in warnings(r)[0]


def test_a_body_past_the_bound_is_refused_before_it_is_read(client):
    r = client.post("/dicom-web/workitems?1.2.3", data=b" " * ((1 << 20) + 1), content_type=JSON)
    assert r.status_code == 413


def test_a_workitem_is_created_once(client):
    assert create(client, "1.2.3").status_code == 201
    r = create(client, "1.2.3")
    assert r.status_code == 409 and warnings(r)


def test_retrieve_refuses(client):
    assert client.get("/dicom-web/workitems/9.9.9").status_code == 404
    assert client.get("/dicom-web/workitems/x..y").status_code == 400
    create(client, "1.2.3")
    assert client.get("/dicom-web/workitems/1.2.3", headers={"Accept": "image/png"}).status_code == 406


# -- the life of a workitem -------------------------------------------------------------------

def test_claim_update_and_complete(client, ups_app):
    create(client, "1.2.3")
    assert state(client, "1.2.3", "IN PROGRESS", "1.2.99").status_code == 200
    model = client.get("/dicom-web/workitems/1.2.3").get_json()
    assert model["00741000"]["Value"] == ["IN PROGRESS"] and "00081195" not in model
    assert ups_app.extensions["worklist"].get("1.2.3").transaction_uid == "1.2.99"
    r = client.post("/dicom-web/workitems/1.2.3", data=json.dumps(performed()), content_type=JSON)
    assert r.status_code == 400 and ups.TRANSACTION_MISSING in warnings(r)[0]
    r = client.post("/dicom-web/workitems/1.2.3?transaction=1.2.98", data=json.dumps(performed()), content_type=JSON)
    assert r.status_code == 400 and ups.TRANSACTION_INCORRECT in warnings(r)[0]
    r = state(client, "1.2.3", "COMPLETED", "1.2.99")
    assert r.status_code == 409 and "final state requirements" in r.get_json()["message"]
    r = client.post("/dicom-web/workitems/1.2.3?transaction=1.2.99", data=json.dumps(performed()), content_type=JSON)
    assert r.status_code == 200
    assert state(client, "1.2.3", "COMPLETED", "1.2.98").status_code == 409
    assert state(client, "1.2.3", "COMPLETED", "1.2.99").status_code == 200
    r = state(client, "1.2.3", "COMPLETED", "1.2.99")
    assert r.status_code == 200 and "already in the requested state of COMPLETED" in warnings(r)[0]
    r = client.post("/dicom-web/workitems/1.2.3?transaction=1.2.99", data=json.dumps(performed()), content_type=JSON)
    assert r.status_code == 400 and ups.INCONSISTENT in warnings(r)[0]


def test_change_state_refuses(client):
    assert state(client, "9.9.9", "IN PROGRESS", "1.2.99").status_code == 404
    create(client, "1.2.3")
    r = state(client, "1.2.3", "COMPLETED", "1.2.99")
    assert r.status_code == 409 and ups.INCONSISTENT in warnings(r)[0]
    assert state(client, "1.2.3", "IN PROGRESS", None).status_code == 400
    assert state(client, "1.2.3", "DONE", "1.2.99").status_code == 400
    r = client.put("/dicom-web/workitems/1.2.3/state", data=b"nope", content_type=JSON)
    assert r.status_code == 400


def test_cancel_request_of_a_scheduled_workitem_cancels_it(client, ups_app):
    create(client, "1.2.3")
    client.post("/dicom-web/workitems/1.2.3/subscribers/WATCHER")
    reason = {"00741238": {"vr": "LT", "Value": ["ordered twice"]}}
    r = client.post("/dicom-web/workitems/1.2.3/cancelrequest", data=json.dumps(reason), content_type=JSON)
    assert r.status_code == 202
    model = client.get("/dicom-web/workitems/1.2.3").get_json()
    assert model["00741000"]["Value"] == ["CANCELED"]
    assert waiting(ups_app, "WATCHER") == [(1, "1.2.3", "SCHEDULED"), (1, "1.2.3", "IN PROGRESS"), (1, "1.2.3", "CANCELED")]
    r = client.post("/dicom-web/workitems/1.2.3/cancelrequest")
    assert r.status_code == 202 and "already in the requested state of CANCELED" in warnings(r)[0]


def test_cancel_request_of_an_in_progress_workitem_reaches_its_subscribers(client, ups_app):
    create(client, "1.2.3")
    state(client, "1.2.3", "IN PROGRESS", "1.2.99")
    r = client.post("/dicom-web/workitems/1.2.3/cancelrequest")
    assert r.status_code == 409 and "performer cannot be contacted" in warnings(r)[0]
    client.post("/dicom-web/workitems/1.2.3/subscribers/PERFORMER")
    assert client.post("/dicom-web/workitems/1.2.3/cancelrequest").status_code == 202
    assert waiting(ups_app, "PERFORMER")[-1][0] == ups.CANCEL_REQUESTED
    assert client.get("/dicom-web/workitems/1.2.3").get_json()["00741000"]["Value"] == ["IN PROGRESS"]
    assert client.post("/dicom-web/workitems/9.9.9/cancelrequest").status_code == 404


# -- search -----------------------------------------------------------------------------------

@pytest.fixture
def listed(client):
    for n, (name, station, start) in enumerate([("Doe^Jane", "CT-AI-1", "20261201080000"),
                                                ("Doe^John", "CT-AI-2", "20261202080000"),
                                                ("Roe^Richard", "CT-AI-1", "20261203080000")], 1):
        request = {"vr": "SQ", "Value": [{"0020000D": {"vr": "UI", "Value": [f"1.2.7.{n}"]},
                                          "00080050": {"vr": "SH", "Value": [f"ACC{n}"]}}]}
        assert create(client, f"1.2.3.{n}", PatientName={"vr": "PN", "Value": [{"Alphabetic": name}]},
                      PatientID={"vr": "LO", "Value": [f"P-{n}"]},
                      ScheduledStationNameCodeSequence={"vr": "SQ", "Value": [code(station)]},
                      ScheduledProcedureStepStartDateTime={"vr": "DT", "Value": [start]},
                      ReferencedRequestSequence=request).status_code == 201
    state(client, "1.2.3.2", "IN PROGRESS", "1.2.99")
    return client


def uids(response) -> list[str]:
    assert response.status_code == 200, response.get_data()
    return [r["00080018"]["Value"][0] for r in response.get_json()]


@pytest.mark.parametrize("query, expected", [
    ("", ["1.2.3.1", "1.2.3.2", "1.2.3.3"]),
    ("ProcedureStepState=SCHEDULED", ["1.2.3.1", "1.2.3.3"]),
    ("ProcedureStepState=IN%20PROGRESS", ["1.2.3.2"]),
    ("00741000=SCHEDULED", ["1.2.3.1", "1.2.3.3"]),
    ("PatientName=doe*", ["1.2.3.1", "1.2.3.2"]),
    ("PatientName=DOE%5EJANE", ["1.2.3.1"]),
    ("PatientID=P-3", ["1.2.3.3"]),
    ("PatientID=P-1,P-3", ["1.2.3.1", "1.2.3.3"]),
    ("ScheduledProcedureStepStartDateTime=20261202-", ["1.2.3.2", "1.2.3.3"]),
    ("ScheduledProcedureStepStartDateTime=-20261202235959", ["1.2.3.1", "1.2.3.2"]),
    ("ScheduledStationNameCodeSequence.CodeValue=CT-AI-1", ["1.2.3.1", "1.2.3.3"]),
    ("00404025.00080100=CT-AI-2", ["1.2.3.2"]),
    ("ScheduledStationNameCodeSequence.CodeValue=CT-AI-1&ProcedureStepState=SCHEDULED&PatientName=R*", ["1.2.3.3"]),
    ("ReferencedRequestSequence.AccessionNumber=ACC2", ["1.2.3.2"]),
    ("ReferencedRequestSequence.StudyInstanceUID=1.2.7.3", ["1.2.3.3"]),
    ("SOPInstanceUID=1.2.3.1,1.2.3.2", ["1.2.3.1", "1.2.3.2"]),
    ("InputReadinessState=READY&ScheduledProcedureStepPriority=MEDIUM&limit=2", ["1.2.3.1", "1.2.3.2"]),
    ("limit=2&offset=2", ["1.2.3.3"]),
    ("ProcedureStepState=COMPLETED", []),
])
def test_search(listed, query, expected):
    assert uids(listed.get(f"/dicom-web/workitems?{query}")) == expected


def test_search_results_are_whole_workitems_without_transaction(listed):
    results = listed.get("/dicom-web/workitems?ProcedureStepState=IN%20PROGRESS").get_json()
    assert "00081195" not in results[0] and results[0]["00741204"]["Value"] == ["Lung nodule detection"]


def test_search_as_xml(listed):
    r = listed.get("/dicom-web/workitems", headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert r.status_code == 200 and r.get_data().count(b"<NativeDicomModel") == 3


@pytest.mark.parametrize("query, status, warned", [
    ("StudyDescription=x", 200, "not supported for matching"),
    ("fuzzymatching=true&PatientName=doe", 200, "fuzzymatching"),
    ("NoSuchAttribute=x", 400, None),
    ("limit=0", 400, None),
    ("offset=-1", 400, None),
    ("ScheduledProcedureStepStartDateTime=yesterday", 400, None),
    ("SOPInstanceUID=x.y", 400, None),
])
def test_search_refusals_and_warnings(listed, query, status, warned):
    r = listed.get(f"/dicom-web/workitems?{query}")
    assert r.status_code == status, r.get_data()
    if warned:
        assert any(warned in w for w in warnings(r))


# -- subscriptions and their events -----------------------------------------------------------

def test_a_workitem_subscription_reports_its_state_changes(client, ups_app):
    create(client, "1.2.3")
    r = client.post("/dicom-web/workitems/1.2.3/subscribers/WATCHER")
    assert r.status_code == 201 and r.headers["Content-Location"].startswith("ws://")
    assert r.headers["Content-Location"].endswith("/dicom-web/subscribers/WATCHER")
    state(client, "1.2.3", "IN PROGRESS", "1.2.99")
    progress = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [100]}}]}, **performed()}
    client.post("/dicom-web/workitems/1.2.3?transaction=1.2.99", data=json.dumps(progress), content_type=JSON)
    state(client, "1.2.3", "COMPLETED", "1.2.99")
    assert [(t, s) for t, _, s in waiting(ups_app, "WATCHER")] == [
        (ups.STATE_REPORT, "SCHEDULED"), (ups.STATE_REPORT, "IN PROGRESS"), (ups.PROGRESS_REPORT, "IN PROGRESS"),
        (ups.STATE_REPORT, "COMPLETED")]


def test_a_global_subscription_takes_existing_and_new_workitems(client, ups_app):
    create(client, "1.2.3.1")
    create(client, "1.2.3.2")
    state(client, "1.2.3.2", "IN PROGRESS", "1.2.99")
    assert client.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/ALL?deletionlock=true").status_code == 201
    assert sorted(waiting(ups_app, "ALL")) == [(1, "1.2.3.1", "SCHEDULED"), (1, "1.2.3.2", "IN PROGRESS")]
    create(client, "1.2.3.3")
    assert waiting(ups_app, "ALL")[-2:] == [(ups.STATE_REPORT, "1.2.3.3", "SCHEDULED"), (ups.ASSIGNED, "1.2.3.3", None)]
    # suspended: the new ones are not taken, the ones taken still report
    assert client.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/ALL/suspend").status_code == 200
    create(client, "1.2.3.4")
    state(client, "1.2.3.1", "IN PROGRESS", "1.2.98")
    reported = waiting(ups_app, "ALL")
    assert not any(uid == "1.2.3.4" for _, uid, _ in reported) and reported[-1] == (1, "1.2.3.1", "IN PROGRESS")
    assert client.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/ALL/suspend").status_code == 404
    # unsubscribed from the Worklist: every workitem's subscription ends too
    assert client.delete(f"/dicom-web/workitems/{WORKLIST}/subscribers/ALL").status_code == 200
    before = len(waiting(ups_app, "ALL"))
    state(client, "1.2.3.1", "CANCELED", "1.2.98")
    assert len(waiting(ups_app, "ALL")) == before


def test_a_filtered_subscription_takes_what_its_filter_matches(client, ups_app):
    create(client, "1.2.3.1", ScheduledStationNameCodeSequence={"vr": "SQ", "Value": [code("CT-AI-1")]})
    r = client.post(f"/dicom-web/workitems/{FILTERED}/subscribers/AI1?deletionlock=true&"
                    "filter=ScheduledStationNameCodeSequence.CodeValue=CT-AI-1,InputReadinessState=READY")
    assert r.status_code == 201, r.get_data()
    create(client, "1.2.3.2", ScheduledStationNameCodeSequence={"vr": "SQ", "Value": [code("CT-AI-2")]})
    create(client, "1.2.3.3", ScheduledStationNameCodeSequence={"vr": "SQ", "Value": [code("CT-AI-1")]})
    create(client, "1.2.3.4", InputReadinessState={"vr": "CS", "Value": ["INCOMPLETE"]})
    assert sorted({uid for _, uid, _ in waiting(ups_app, "AI1")}) == ["1.2.3.1", "1.2.3.3"]


@pytest.mark.parametrize("path, status", [
    (f"/dicom-web/workitems/{FILTERED}/subscribers/AI1", 400),                   # no filter
    (f"/dicom-web/workitems/{FILTERED}/subscribers/AI1?filter=NoSuchKey=1", 400),
    (f"/dicom-web/workitems/{FILTERED}/subscribers/AI1?filter=StudyDescription=1", 400),   # not matched on
    (f"/dicom-web/workitems/{FILTERED}/subscribers/AI1?filter=garbage", 400),
    (f"/dicom-web/workitems/{WORKLIST}/subscribers/AI1?filter=PatientID=1", 400),
    ("/dicom-web/workitems/9.9.9/subscribers/AI1", 404),
    ("/dicom-web/workitems/1.2.3/subscribers/TOO-LONG-AE-TITLE-X", 400),
    ("/dicom-web/workitems/1.2.3/subscribers/A%5CB", 400),
    ("/dicom-web/workitems/1.2.3/subscribers/%20%20", 400),
    ("/dicom-web/workitems/1.2.3/subscribers/AI1?deletionlock=maybe", 400),
])
def test_subscribe_refuses(client, path, status):
    create(client, "1.2.3")
    assert client.post(path).status_code == status


def test_unsubscribe_and_suspend_refuse_what_is_not_there(client):
    create(client, "1.2.3")
    r = client.delete("/dicom-web/workitems/1.2.3/subscribers/NOBODY")
    assert r.status_code == 404 and "Subscription was not found" in warnings(r)[0]
    assert client.post("/dicom-web/workitems/1.2.3/subscribers/NOBODY/suspend").status_code == 400
    assert client.delete(f"/dicom-web/workitems/{WORKLIST}/subscribers/NOBODY").status_code == 404


def test_an_ae_title_belongs_to_the_peer_that_first_subscribed_with_it(client, ups_app):
    create(client, "1.2.3")
    assert client.post("/dicom-web/workitems/1.2.3/subscribers/MINE").status_code == 201
    other = client_of(ups_app, OTHER_KEY)
    assert other.post("/dicom-web/workitems/1.2.3/subscribers/MINE").status_code == 403
    assert other.delete("/dicom-web/workitems/1.2.3/subscribers/MINE").status_code == 403
    assert other.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/MINE").status_code == 403
    assert other.post("/dicom-web/workitems/1.2.3/subscribers/THEIRS").status_code == 201


def test_the_worklist_permission_is_needed(ups_app):
    reader = client_of(ups_app, "r" * 40)
    assert reader.get("/dicom-web/workitems").status_code == 403
    assert reader.post("/dicom-web/workitems?1.2.3", data=json.dumps(new_workitem()), content_type=JSON).status_code == 403
    assert ups_app.test_client().get("/dicom-web/workitems").status_code == 401


def test_the_event_channel_needs_a_websocket(client):
    r = client.get("/dicom-web/subscribers/WATCHER")
    assert r.status_code == 426 and r.headers["Upgrade"] == "websocket"


def test_the_subscription_audit_names_the_ae_title_and_the_peer(client, caplog):
    import logging

    create(client, "1.2.3")
    with caplog.at_level(logging.INFO, logger="dicomweb.audit"):
        client.post("/dicom-web/workitems/1.2.3/subscribers/WATCHER", buffered=True)
    record = json.loads([r.getMessage() for r in caplog.records if r.name == "dicomweb.audit"][-1])
    assert (record["peer"], record["subscriber"], record["status"]) == (PEER, "WATCHER", 201)


# -- deletion locks and the sweep -------------------------------------------------------------

def test_a_deletion_lock_keeps_a_final_workitem_until_its_subscription_ends(client, ups_app):
    worklist = ups_app.extensions["worklist"]
    for uid in ("1.2.3.1", "1.2.3.2"):
        create(client, uid)
        state(client, uid, "IN PROGRESS", "1.2.99")
        state(client, uid, "CANCELED", "1.2.99")
    client.post("/dicom-web/workitems/1.2.3.1/subscribers/KEEPER?deletionlock=true")
    removed, _ = worklist.sweep(time.time() + 1, 0)
    assert removed == 1
    assert client.get("/dicom-web/workitems/1.2.3.2").status_code == 404
    assert client.get("/dicom-web/workitems/1.2.3.1").status_code == 200
    client.delete("/dicom-web/workitems/1.2.3.1/subscribers/KEEPER")
    assert worklist.sweep(time.time() + 1, 0)[0] == 1
    assert client.get("/dicom-web/workitems/1.2.3.1").status_code == 404


def test_queued_events_are_bounded_per_ae_title_as_they_are_queued(client, ups_app, caplog):
    """The bound held only when a channel opened: a title that never connects grew without one."""
    import logging

    worklist = ups_app.extensions["worklist"]
    worklist.max_queued = 5
    with caplog.at_level(logging.WARNING, logger="storage.worklist"):
        for n in range(4):
            create(client, f"1.2.3.{n}")
            client.post(f"/dicom-web/workitems/1.2.3.{n}/subscribers/SLOW")
            state(client, f"1.2.3.{n}", "IN PROGRESS", "1.2.99")
    kept = waiting(ups_app, "SLOW")
    assert len(kept) == 5 and kept[-1] == (1, "1.2.3.3", "IN PROGRESS"), "the newest are kept"
    assert sum(int(m.split("the ")[1].split(" ")[0]) for m in caplog.messages if "dropped" in m) == 3
    assert all("SLOW" in m and "DICOMWEB_WORKLIST_QUEUED_EVENTS" in m for m in caplog.messages if "dropped" in m)
    worklist.open_channel("SLOW", PEER, "channel-1")
    assert waiting(ups_app, "SLOW") == kept
    worklist.max_queued = 3   # a lower bound takes effect at the next queueing too
    state(client, "1.2.3.0", "COMPLETED", "1.2.99")   # refused (final-state requirements), nothing queued
    client.post("/dicom-web/workitems/1.2.3.0?transaction=1.2.99", data=json.dumps(performed()), content_type=JSON)
    assert state(client, "1.2.3.0", "COMPLETED", "1.2.99").status_code == 200
    assert len(waiting(ups_app, "SLOW")) == 3


def test_unsubscribing_forgets_the_events_waiting(client, ups_app):
    for n in range(3):
        create(client, f"1.2.3.{n}")
        client.post(f"/dicom-web/workitems/1.2.3.{n}/subscribers/GONE")
    client.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/GONE")
    state(client, "1.2.3.0", "IN PROGRESS", "1.2.99")
    state(client, "1.2.3.1", "IN PROGRESS", "1.2.99")
    assert {uid for _, uid, _ in waiting(ups_app, "GONE")} == {"1.2.3.0", "1.2.3.1", "1.2.3.2"}
    assert client.delete("/dicom-web/workitems/1.2.3.0/subscribers/GONE").status_code == 200
    assert {uid for _, uid, _ in waiting(ups_app, "GONE")} == {"1.2.3.1", "1.2.3.2"}   # that workitem's only
    assert client.delete(f"/dicom-web/workitems/{WORKLIST}/subscribers/GONE").status_code == 200
    assert waiting(ups_app, "GONE") == []


def test_titles_that_never_connect_are_swept_with_what_they_hold(client, ups_app):
    worklist = ups_app.extensions["worklist"]
    create(client, "1.2.3.1")
    client.post("/dicom-web/workitems/1.2.3.1/subscribers/NEVER")
    client.post(f"/dicom-web/workitems/{WORKLIST}/subscribers/NEVER")
    client.post("/dicom-web/workitems/1.2.3.1/subscribers/ACTIVE")
    worklist.open_channel("ACTIVE", PEER, "channel-a")
    later = time.time() + 10
    worklist.channel_alive("ACTIVE", "channel-a")   # its channel is open: seen now, again
    assert worklist.forget_unseen(time.time() - 60) == []   # both seen within the minute
    import storage.worklist as stored
    real = time.time
    try:   # a week on: NEVER was claimed and never connected; ACTIVE's channel kept saying it is alive
        stored.time.time = lambda: later + 7 * 86400
        worklist.channel_alive("ACTIVE", "channel-a")
    finally:
        stored.time.time = real
    assert worklist.forget_unseen(later + 86400) == ["NEVER"]
    assert worklist.subscribed_titles() == ["ACTIVE"] and waiting(ups_app, "NEVER") == []
    state(client, "1.2.3.1", "IN PROGRESS", "1.2.99")
    assert waiting(ups_app, "NEVER") == [] and len(waiting(ups_app, "ACTIVE")) == 2


# -- concurrency ------------------------------------------------------------------------------

def test_concurrent_claims_of_one_workitem_have_one_winner(ups_app):
    client = client_of(ups_app)
    for n in range(10):
        assert create(client, f"1.2.4.{n}").status_code == 201
    for n in range(10):
        barrier, statuses = threading.Barrier(6), []

        def claim(k: int) -> None:
            own = client_of(ups_app)
            barrier.wait()
            statuses.append((state(own, f"1.2.4.{n}", "IN PROGRESS", f"1.2.99.{k}").status_code, k))

        threads = [threading.Thread(target=claim, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [k for status, k in statuses if status == 200]
        assert len(winners) == 1 and sorted(s for s, _ in statuses) == [200] + [409] * 5
        assert ups_app.extensions["worklist"].get(f"1.2.4.{n}").transaction_uid == f"1.2.99.{winners[0]}"


@pytest.mark.parametrize("headers, status, named", [
    ({"Sec-WebSocket-Version": "13"}, 400, "Sec-WebSocket-Key"),                          # no key
    ({"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "not base64!"}, 400, "Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "c2hvcnQ="}, 400, "Sec-WebSocket-Key"),   # 5 bytes
    ({"Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 426, "version 13"),
    ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 426, "version 13"),              # no version
])
def test_a_malformed_opening_handshake_is_refused_before_the_channel_opens(client, ups_app, headers, status, named):
    """RFC 6455 §4.2.1, §4.4: each was a 500 (simple-websocket's own error) before."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", **headers}
    r = client.get("/dicom-web/subscribers/WATCHER", headers=upgrade)
    assert r.status_code == status and named in r.get_json()["message"], r.get_data()
    if status == 426:
        assert r.headers["Sec-WebSocket-Version"] == "13"
    assert ups_app.extensions["worklist"].channel_of("WATCHER") is None   # the AE title was not taken


@pytest.mark.parametrize("query, inside", [
    ("?transaction=1.2.99", None),           # PS3.18 §11.6.1
    ("?1.2.99", None),                       # the bare form the standard writes, as at create
    ("?Transaction-uid=1.2.99", None),       # dcm4chee's
    ("?TRANSACTION-UID=1.2.99", None),
    ("?00081195=1.2.99", None),
    ("", "1.2.99"),                          # in the data set, as N-SET carries it
    ("?transaction=1.2.99", "1.2.99"),       # both, the same
])
def test_an_update_of_a_claimed_workitem_takes_each_form_of_the_transaction_uid(client, query, inside):
    """Only ?transaction= without one in the body was taken before; each other form was a 400."""
    assert create(client, "1.2.3").status_code == 201
    assert state(client, "1.2.3", "IN PROGRESS", "1.2.99").status_code == 200
    body = performed() | ({"00081195": {"vr": "UI", "Value": [inside]}} if inside else {})
    r = client.post(f"/dicom-web/workitems/1.2.3{query}", data=json.dumps(body), content_type=JSON)
    assert r.status_code == 200, r.get_data()
    assert state(client, "1.2.3", "COMPLETED", "1.2.99").status_code == 200   # the update took
    assert "00081195" not in client.get("/dicom-web/workitems/1.2.3").get_json()


@pytest.mark.parametrize("query, inside, status", [
    ("?transaction=1.2.98", None, 400), ("?1.2.98", None, 400), ("", "1.2.98", 400),
    ("?transaction=1.2.99", "1.2.98", 400), ("?transaction=1.2.99&1.2.98", None, 400), ("", None, 400),
])
def test_an_update_refuses_a_transaction_uid_that_is_not_the_locks(client, query, inside, status):
    assert create(client, "1.2.3").status_code == 201
    assert state(client, "1.2.3", "IN PROGRESS", "1.2.99").status_code == 200
    body = performed() | ({"00081195": {"vr": "UI", "Value": [inside]}} if inside else {})
    r = client.post(f"/dicom-web/workitems/1.2.3{query}", data=json.dumps(body), content_type=JSON)
    assert r.status_code == status and "Transaction UID" in r.headers["Warning"], r.get_data()


def test_a_dcm4chee_style_client_flow_runs_to_the_end(client, ups_app):
    """Create with the two performance sequences empty and ?workitem=, claim, update with
    ?Transaction-uid=, complete; a subscriber hears every step."""
    workitem = new_workitem(ProcedureStepProgressInformationSequence={"vr": "SQ"},
                            UnifiedProcedureStepPerformedProcedureSequence={"vr": "SQ", "Value": []},
                            TransactionUID={"vr": "UI"})
    r = client.post("/dicom-web/workitems?workitem=1.2.3", data=json.dumps(workitem), content_type=JSON)
    assert r.status_code == 201, r.get_data()
    assert client.post("/dicom-web/workitems/1.2.3/subscribers/WATCHER").status_code in (200, 201)
    assert state(client, "1.2.3", "IN PROGRESS", "1.2.99").status_code == 200
    progress = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [50]}}]}}
    r = client.post("/dicom-web/workitems/1.2.3?Transaction-uid=1.2.99", data=json.dumps(progress), content_type=JSON)
    assert r.status_code == 200, r.get_data()
    r = client.post("/dicom-web/workitems/1.2.3?Transaction-uid=1.2.99", data=json.dumps(performed()), content_type=JSON)
    assert r.status_code == 200, r.get_data()
    assert state(client, "1.2.3", "COMPLETED", "1.2.99").status_code == 200
    reported = [(kind, step) for kind, _, step in waiting(ups_app, "WATCHER")]
    assert reported == [(ups.STATE_REPORT, "SCHEDULED"),   # on subscribing (PS3.4 CC.2.3.3)
                        (ups.STATE_REPORT, "IN PROGRESS"), (ups.PROGRESS_REPORT, "IN PROGRESS"),
                        (ups.STATE_REPORT, "COMPLETED")]


def test_dicomweb_sweep_forgets_a_title_that_never_connected(tmp_path, monkeypatch):
    """Through the operator's command, eight days on: the title is forgotten and said to be."""
    config = make_config(tmp_path, peers=(Peer(PEER, hash_key(API_KEY), frozenset({"read", "worklist"})),))
    app = create_app(config)
    client = client_of(app)
    create(client, "1.2.3.1")
    client.post("/dicom-web/workitems/1.2.3.1/subscribers/NEVER")
    output = sweep_days_later(monkeypatch, config, 8)
    assert "forgot 1 AE title(s)" in output, output
    assert app.extensions["worklist"].subscribed_titles() == [] and waiting(app, "NEVER") == []


def test_the_polling_bell_rings_for_an_event_committed_before_its_first_look():
    """A channel looks at the catalog, finds nothing, and waits on the bell; the poller thread
    starts with that wait. An event committed between the two was the poller's baseline, so
    nothing rang and the channel slept until its next check (5 s): seen in a CI run."""
    from service.worklist.channel import Bell

    class Committed:   # an embedded (SQLite) worklist whose event is there when the poller first looks
        class catalog:
            is_sqlite = True

        def latest_event(self):
            return 7

    bell = Bell(Committed(), poll_seconds=0.01)
    started = time.monotonic()
    assert bell.wait(bell.count, timeout=2.0) != 0
    assert time.monotonic() - started < 1.0
