"""UPS-RS from outside: real gunicorn (and nginx, deploy/nginx/dicomweb.conf), real WebSocket
subscribers (websocket-client): events within a second, across workers, across a killed
worker, across nodes (PostgreSQL LISTEN/NOTIFY, Redis), a bounded number of channels that
leaves the request threads free, and a realistic flow of a scheduler, four performers and a
watcher that sees every state report exactly once."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest
import requests
import websocket

from service.worklist import ups
from testbed.nginx import Nginx
from testbed.server import Server
from tests.conftest import API_KEY, free_port, need_redis, postgres_schema, require_nginx
from tests.test_faults import children
from tests.test_ups_rules import code, new_workitem, performed

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {**AUTH, "Content-Type": "application/dicom+json"}
PERMISSIONS = {"DICOMWEB_API_KEY": API_KEY, "DICOMWEB_API_KEY_PERMISSIONS": "read,store,worklist"}


def env(data_dir, **more) -> dict:
    return {"DICOMWEB_DATA_DIR": str(data_dir), **PERMISSIONS, **more}


def subscribe(base: str, ae_title: str, workitem: str = ups.GLOBAL_SUBSCRIPTION, session=requests, **params) -> None:
    r = session.post(f"{base}/workitems/{workitem}/subscribers/{ae_title}", headers=AUTH, params=params)
    assert r.status_code == 201, r.text


def channel(base: str, ae_title: str, **options) -> websocket.WebSocket:
    url = base.replace("https://", "wss://").replace("http://", "ws://") + f"/subscribers/{ae_title}"
    return websocket.create_connection(url, header=AUTH, timeout=5, **options)


def create(base: str, uid: str, session=requests, **changes) -> None:
    r = session.post(f"{base}/workitems?{uid}", data=json.dumps(new_workitem(**changes)), headers=JSON)
    assert r.status_code == 201, r.text


def change_state(base: str, uid: str, new_state: str, transaction: str, session=requests) -> int:
    body = {"00741000": {"vr": "CS", "Value": [new_state]}, "00081195": {"vr": "UI", "Value": [transaction]}}
    return session.put(f"{base}/workitems/{uid}/state", data=json.dumps(body), headers=JSON).status_code


def event_of(text: str) -> tuple[int, str, str | None]:
    report = json.loads(text)
    assert report["00000002"]["Value"] == [ups.EVENT_SOP_CLASS] and report["00000100"]["Value"] == [0x0100]
    return (report["00001002"]["Value"][0], report["00001000"]["Value"][0],
            (report.get("00741000") or {}).get("Value", [None])[0])


def next_state_report(ws: websocket.WebSocket, timeout: float = 1.0) -> tuple[tuple[int, str, str | None], float]:
    """The next state report (others skipped) and how long it took to come."""
    started = time.monotonic()
    while True:
        ws.settimeout(max(0.01, timeout - (time.monotonic() - started)))
        event = event_of(ws.recv())
        if event[0] == ups.STATE_REPORT:
            return event, time.monotonic() - started


def wait_healthy(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(base.rsplit("/dicom-web", 1)[0] + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come back")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    require_nginx()
    work = tmp_path_factory.mktemp("ups")
    port = free_port()
    server = Server(env(work / "var", DICOMWEB_TRUSTED_PROXIES="1"), port, work / "gunicorn.log")
    nginx = Nginx(work, port, free_port(), free_port())
    yield server, nginx
    nginx.stop()
    server.stop()


def test_an_event_through_nginx_within_a_second(proxied):
    server, nginx = proxied
    base = f"{nginx.base}/dicom-web"
    session = requests.Session()
    session.trust_env, session.verify = False, str(nginx.cert)
    create(base, "1.2.5.1", session)
    r = session.post(f"{base}/workitems/1.2.5.1/subscribers/NGINXWATCH", headers=AUTH)
    assert r.status_code == 201 and r.headers["Content-Location"] == f"wss://localhost:{nginx.https_port}/dicom-web/subscribers/NGINXWATCH"
    ws = channel(base, "NGINXWATCH", sslopt={"ca_certs": str(nginx.cert)})
    try:
        assert next_state_report(ws)[0] == (1, "1.2.5.1", "SCHEDULED")   # the initial report
        assert change_state(base, "1.2.5.1", "IN PROGRESS", "1.2.99.1", session) == 200
        event, took = next_state_report(ws)
        assert event == (1, "1.2.5.1", "IN PROGRESS") and took < 1.0
    finally:
        ws.close()


def test_events_reach_a_subscriber_after_its_worker_is_killed(proxied):
    server, nginx = proxied
    base = server.dicomweb
    subscribe(base, "SURVIVOR")
    ws = channel(base, "SURVIVOR")
    create(base, "1.2.6.1")
    assert next_state_report(ws)[0] == (1, "1.2.6.1", "SCHEDULED")
    for pid in children(server.process.pid):     # every worker, the channel's among them
        os.kill(pid, signal.SIGKILL)
    with pytest.raises((websocket.WebSocketException, OSError)):
        ws.settimeout(10)
        while True:   # what was on its way, then the end
            ws.recv()
    wait_healthy(base)
    assert change_state(base, "1.2.6.1", "IN PROGRESS", "1.2.99.2") == 200   # while no channel is open
    ws = channel(base, "SURVIVOR")
    try:
        assert next_state_report(ws)[0] == (1, "1.2.6.1", "IN PROGRESS")
        create(base, "1.2.6.2")
        event, took = next_state_report(ws)
        assert event == (1, "1.2.6.2", "SCHEDULED") and took < 1.0
    finally:
        ws.close()


def test_a_newer_channel_replaces_an_older_one(proxied):
    server, _ = proxied
    subscribe(server.dicomweb, "TWICE")
    first = channel(server.dicomweb, "TWICE")
    second = channel(server.dicomweb, "TWICE")
    try:
        first.settimeout(10)
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                first.recv()
        create(server.dicomweb, "1.2.6.9")
        assert next_state_report(second)[0] == (1, "1.2.6.9", "SCHEDULED")
    finally:
        second.close()


def test_channels_are_bounded_and_leave_the_request_threads_free(tmp_path):
    """One worker of 4 threads, at most 2 channels: the third is refused with 503 before the
    upgrade, and requests are answered at once while two channels are open."""
    server = Server(env(tmp_path / "var", DICOMWEB_WORKLIST_CHANNELS="2",
                        GUNICORN_CMD_ARGS="--workers 1 --threads 4"), free_port(), tmp_path / "gunicorn.log")
    try:
        base = server.dicomweb
        for title in ("ONE", "TWO", "THREE"):
            subscribe(base, title)
        open_ = [channel(base, "ONE"), channel(base, "TWO")]
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            channel(base, "THREE")
        assert refused.value.status_code == 503
        started = time.monotonic()
        for n in range(20):
            create(base, f"1.2.7.{n}")
            assert requests.get(f"{base}/workitems/1.2.7.{n}", headers=AUTH).status_code == 200
        assert time.monotonic() - started < 10
        assert next_state_report(open_[0])[0][1] == "1.2.7.0"
        open_.pop().close()
        time.sleep(1.5)    # the closed channel's thread sees it within its second
        third = channel(base, "THREE")
        assert next_state_report(third)[0][0] == ups.STATE_REPORT
        third.close()
        open_[0].close()
    finally:
        server.stop()


def test_a_scheduler_four_performers_and_a_watcher(tmp_path):
    """100 workitems made; four performers find SCHEDULED ones, claim them (a lost race is a 409,
    and they try the next), report progress and complete them; the global watcher receives
    every state report, each exactly once, in each workitem's order."""
    server = Server(env(tmp_path / "var"), free_port(), tmp_path / "gunicorn.log")
    base = server.dicomweb
    received: list[tuple[int, str, str | None]] = []
    try:
        subscribe(base, "WATCHER")
        ws = channel(base, "WATCHER")
        done = threading.Event()

        def watch() -> None:
            ws.settimeout(1)
            while not done.is_set() or len(received) < 300:
                try:
                    received.append(event_of(ws.recv()))
                except websocket.WebSocketTimeoutException:
                    if done.is_set():
                        return
        watcher = threading.Thread(target=watch)
        watcher.start()
        for n in range(100):
            create(base, f"1.2.8.{n}", ScheduledStationNameCodeSequence={"vr": "SQ", "Value": [code("AI")]})
        completed: Counter = Counter()
        conflicts = Counter()

        def perform(k: int) -> None:
            session = requests.Session()
            while True:
                found = session.get(f"{base}/workitems", headers=AUTH, params={
                    "ProcedureStepState": "SCHEDULED", "ScheduledStationNameCodeSequence.CodeValue": "AI",
                    "limit": "10"}).json()
                if not found:
                    return
                for item in found:
                    uid, transaction = item["00080018"]["Value"][0], f"1.2.9.{k}.{time.monotonic_ns()}"
                    status = change_state(base, uid, "IN PROGRESS", transaction, session)
                    if status == 409:
                        conflicts[k] += 1
                        continue
                    assert status == 200
                    progress = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [50]}}]},
                                **performed()}
                    r = session.post(f"{base}/workitems/{uid}", params={"transaction": transaction},
                                     data=json.dumps(progress), headers=JSON)
                    assert r.status_code == 200, r.text
                    assert change_state(base, uid, "COMPLETED", transaction, session) == 200
                    completed[k] += 1

        performers = [threading.Thread(target=perform, args=(k,)) for k in range(4)]
        for t in performers:
            t.start()
        for t in performers:
            t.join(120)
        assert sum(completed.values()) == 100
        deadline = time.monotonic() + 10
        while sum(1 for e in received if e[0] == ups.STATE_REPORT) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        watcher.join(10)
        ws.close()
    finally:
        server.stop()
    reports = [e for e in received if e[0] == ups.STATE_REPORT]
    assert len(reports) == 300 and len(set(reports)) == 300, "each state report exactly once"
    for n in range(100):
        assert [s for _, uid, s in reports if uid == f"1.2.8.{n}"] == ["SCHEDULED", "IN PROGRESS", "COMPLETED"]
    assert sum(1 for e in received if e[0] == ups.PROGRESS_REPORT) == 100


def _two_nodes(tmp_path, **shared):
    """Two gunicorn servers (two nodes) over one catalog."""
    first = Server(env(tmp_path / "one", **shared), free_port(), tmp_path / "one.log")
    try:
        second = Server(env(tmp_path / "two", **shared), free_port(), tmp_path / "two.log")
    except Exception:
        first.stop()
        raise
    return first, second


def _across(first: Server, second: Server) -> None:
    subscribe(first.dicomweb, "ACROSS")
    ws = channel(first.dicomweb, "ACROSS")
    try:
        for n in range(5):
            create(second.dicomweb, f"1.2.10.{n}")
            event, took = next_state_report(ws)
            assert event == (1, f"1.2.10.{n}", "SCHEDULED") and took < 1.0
    finally:
        ws.close()


def test_events_cross_nodes_over_postgresql(tmp_path):
    with postgres_schema("ups") as url:
        first, second = _two_nodes(tmp_path, DICOMWEB_CATALOG_URL=url, DICOMWEB_STORAGE=str(tmp_path / "blobs"))
        try:
            _across(first, second)
        finally:
            second.stop()
            first.stop()


def test_events_cross_nodes_over_redis(tmp_path):
    need_redis()
    # One SQLite catalog, two nodes; polling slowed to 30 s so that only Redis can wake the channel in time.
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    first, second = _two_nodes(tmp_path, DICOMWEB_CATALOG_URL=catalog, DICOMWEB_STORAGE=str(tmp_path / "blobs"),
                               DICOMWEB_REDIS_URL="redis://127.0.0.1:6379/0", DICOMWEB_WORKLIST_POLL_SECONDS="30")
    try:
        _across(first, second)
    finally:
        second.stop()
        first.stop()


def test_subscribers_are_told_the_service_went_down_and_restarted(tmp_path):
    port = free_port()
    server = Server(env(tmp_path / "var"), port, tmp_path / "first.log")
    subscribe(server.dicomweb, "TOLD")
    server.stop()    # SIGTERM: a graceful stop (gunicorn's on_exit)
    server = Server(env(tmp_path / "var"), port, tmp_path / "second.log")
    ws = channel(server.dicomweb, "TOLD")
    try:
        told = []
        for _ in range(2):
            report = json.loads(ws.recv())
            assert report["00001002"]["Value"] == [ups.SCP_STATUS_CHANGE]
            assert report["00001000"]["Value"] == [ups.GLOBAL_SUBSCRIPTION]
            assert report["00741244"]["Value"] == ["WARM START"]
            told.append(report["00741242"]["Value"][0])
        assert told == ["GOING DOWN", "RESTARTED"]
    finally:
        ws.close()
        server.stop()
