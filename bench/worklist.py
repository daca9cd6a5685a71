"""UPS-RS figures through gunicorn (deploy/gunicorn.conf.py), on SQLite and on PostgreSQL:
search latency over 100,000 workitems, create → claim → progress → complete throughput from
concurrent clients, and the delay from a state change to its event on a WebSocket subscriber.

    python -m bench.worklist [--workitems 100000] [--clients 8] [--flows 400] [--events 200]

The workitems are loaded straight into the catalog (storage.worklist.Worklist.create_many: the
same rows and search keys as a create, without its HTTP), then the catalog is ANALYZEd (as
PostgreSQL's autovacuum does within a minute of a bulk load: before it, the planner took the
state index for a rare key and sorted 80,000 rows, 150 ms); everything timed goes through HTTP.
Orthanc has no Worklist service (nor do Google's); there is nothing to run beside it here.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests
import websocket

from service.worklist import ups
from storage import Catalog
from storage.worklist import Worklist
from testbed import postgres
from testbed.server import ROOT, Server, free_port

KEY = "bench-worklist-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/dicom+json"}
NAMES = ["SMITH", "JONES", "GARCIA", "MÜLLER", "ROSSI", "DUBOIS", "NOVAK", "SILVA", "KOWALSKI", "JANSEN"]
STATES = ["SCHEDULED"] * 8 + ["IN PROGRESS", "COMPLETED"]


def code(value: str) -> dict:
    return {"00080100": {"vr": "SH", "Value": [value]}, "00080102": {"vr": "SH", "Value": ["99BENCH"]},
            "00080104": {"vr": "LO", "Value": [value]}}


def workitem(n: int, rng: random.Random) -> dict:
    day, minute = rng.randrange(30), rng.randrange(24 * 60)
    return {
        "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
        "00741200": {"vr": "CS", "Value": [rng.choice(["HIGH", "MEDIUM", "LOW"])]},
        "00741204": {"vr": "LO", "Value": ["AI lung nodules"]},
        "00404005": {"vr": "DT", "Value": [f"202612{day + 1:02d}{minute // 60:02d}{minute % 60:02d}00"]},
        "00404041": {"vr": "CS", "Value": ["READY"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"{rng.choice(NAMES)}^P{n}"}]},
        "00100020": {"vr": "LO", "Value": [f"P-{n}"]},
        "00404025": {"vr": "SQ", "Value": [code(f"STATION-{n % 50}")]},
        "0040A370": {"vr": "SQ", "Value": [{"0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.10.9.{n}"]},
                                            "00080050": {"vr": "SH", "Value": [f"ACC{n}"]}}]},
    }


def fill(catalog_url: str, count: int) -> float:
    catalog = Catalog(catalog_url)
    worklist, rng, started = Worklist(catalog), random.Random(7), time.perf_counter()
    for start in range(0, count, 2000):
        made = []
        for n in range(start, min(start + 2000, count)):
            uid = f"1.2.826.0.1.3680043.10.8.{n}"
            model = ups.create(workitem(n, rng), uid, "20261201000000").model
            model[ups.T["ProcedureStepState"]] = ups.element("ProcedureStepState", STATES[n % len(STATES)])
            made.append((uid, model))
        worklist.create_many(made)
    with catalog.engine.begin() as conn:   # the statistics autovacuum (PostgreSQL) would gather a minute later
        conn.exec_driver_sql("ANALYZE")
    catalog.dispose()
    return time.perf_counter() - started


SEARCHES = {
    "state, first 100": {"ProcedureStepState": "SCHEDULED", "limit": "100"},
    "patient ID": {"PatientID": "P-54321"},
    "name prefix, first 20": {"PatientName": "GARCIA*", "limit": "20"},
    "one day, scheduled, first 50": {"ScheduledProcedureStepStartDateTime": "20261215000000-20261215235959",
                                     "ProcedureStepState": "SCHEDULED", "limit": "50"},
    "station code, scheduled, first 20": {"ScheduledStationNameCodeSequence.CodeValue": "STATION-7",
                                          "ProcedureStepState": "SCHEDULED", "limit": "20"},
    "accession number": {"ReferencedRequestSequence.AccessionNumber": "ACC77777"},
}


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2), "n": len(ordered)}


def search_latency(base: str, rounds: int = 200) -> dict:
    session, results = requests.Session(), {}
    for name, params in SEARCHES.items():
        for _ in range(10):   # warm
            session.get(f"{base}/workitems", params=params, headers=AUTH)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            r = session.get(f"{base}/workitems", params=params, headers=AUTH)
            samples.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
        results[name] = {**percentiles(samples), "results": len(r.json())}
    return results


def state(session: requests.Session, base: str, uid: str, new_state: str, transaction: str) -> None:
    body = {"00741000": {"vr": "CS", "Value": [new_state]}, "00081195": {"vr": "UI", "Value": [transaction]}}
    r = session.put(f"{base}/workitems/{uid}/state", data=json.dumps(body), headers=JSON)
    assert r.status_code == 200, r.text


def throughput(base: str, clients: int, flows: int) -> dict:
    done_by: list[int] = []
    counter = iter(range(flows))
    lock = threading.Lock()
    performed = {"00741216": {"vr": "SQ", "Value": [{
        "00404050": {"vr": "DT", "Value": ["20261203120000"]}, "00404051": {"vr": "DT", "Value": ["20261203121500"]},
        "00404028": {"vr": "SQ", "Value": [code("STATION-1")]}, "00404019": {"vr": "SQ", "Value": [code("LUNG")]}}]},
        "00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [100]}}]}}

    def client(k: int) -> None:
        session, rng = requests.Session(), random.Random(k)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            uid, transaction = f"1.2.826.0.1.3680043.10.7.{k}.{n}", f"1.2.826.0.1.3680043.10.6.{k}.{n}"
            r = session.post(f"{base}/workitems?{uid}", data=json.dumps(workitem(n, rng)), headers=JSON)
            assert r.status_code == 201, r.text
            state(session, base, uid, "IN PROGRESS", transaction)
            r = session.post(f"{base}/workitems/{uid}", params={"transaction": transaction},
                             data=json.dumps(performed), headers=JSON)
            assert r.status_code == 200, r.text
            state(session, base, uid, "COMPLETED", transaction)
            done_by.append(k)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"clients": clients, "flows": len(done_by), "seconds": round(elapsed, 2),
            "flows_per_s": round(len(done_by) / elapsed, 1), "requests_per_s": round(4 * len(done_by) / elapsed, 1)}


def event_latency(base: str, count: int) -> dict:
    r = requests.post(f"{base}/workitems/{ups.GLOBAL_SUBSCRIPTION}/subscribers/BENCH", headers=AUTH)
    assert r.status_code == 201, r.text
    url = base.replace("http://", "ws://") + "/subscribers/BENCH"
    ws = websocket.create_connection(url, header=AUTH, timeout=10)
    session, created, claimed = requests.Session(), [], []

    def until(uid: str, wanted: str) -> None:
        while True:
            report = json.loads(ws.recv())
            if (report["00001000"]["Value"] == [uid] and report["00001002"]["Value"] == [ups.STATE_REPORT]
                    and report["00741000"]["Value"] == [wanted]):
                return

    try:
        rng = random.Random(3)
        for n in range(count):
            time.sleep(rng.uniform(0, 0.1))   # not in step with a poller's period
            uid = f"1.2.826.0.1.3680043.10.5.{n}"
            started = time.perf_counter()
            session.post(f"{base}/workitems?{uid}", data=json.dumps(workitem(n, rng)), headers=JSON)
            until(uid, "SCHEDULED")
            created.append(time.perf_counter() - started)
            started = time.perf_counter()
            state(session, base, uid, "IN PROGRESS", f"1.2.826.0.1.3680043.10.4.{n}")
            until(uid, "IN PROGRESS")
            claimed.append(time.perf_counter() - started)
    finally:
        ws.close()
    return {"create_to_event": percentiles(created), "claim_to_event": percentiles(claimed)}


def run(name: str, catalog_url: str, work: Path, args: argparse.Namespace) -> dict:
    env = {"DICOMWEB_DATA_DIR": str(work / name), "DICOMWEB_API_KEY": KEY,
           "DICOMWEB_API_KEY_PERMISSIONS": "read,store,worklist", "DICOMWEB_CATALOG_URL": catalog_url}
    server = Server(env, free_port(), work / f"{name}.log")
    try:
        filled = fill(catalog_url, args.workitems)
        print(f"{name}: {args.workitems} workitems loaded in {filled:.0f} s")
        result = {"workitems": args.workitems, "search": search_latency(server.dicomweb),
                  "throughput": throughput(server.dicomweb, args.clients, args.flows),
                  "events": event_latency(server.dicomweb, args.events)}
    finally:
        server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workitems", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--flows", type=int, default=400)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "worklist.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-worklist-"))
    results = {}
    with ExitStack() as stack:
        catalogs = {"sqlite": f"sqlite:///{work / 'catalog.sqlite'}"}
        if postgres.reachable():
            catalogs["postgresql"] = stack.enter_context(postgres.schema("bench"))
        for name, url in catalogs.items():
            results[name] = run(name, url, work, args)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, result in results.items():
        print(f"\n{name}")
        for query, figures in result["search"].items():
            print(f"  search {query:36} p50 {figures['p50_ms']:6.2f} ms  p95 {figures['p95_ms']:6.2f} ms"
                  f"  ({figures['results']} results)")
        t = result["throughput"]
        print(f"  {t['clients']} clients: {t['flows_per_s']} create→claim→progress→complete flows/s "
              f"({t['requests_per_s']} requests/s)")
        for what, figures in result["events"].items():
            print(f"  {what:16} p50 {figures['p50_ms']:6.2f} ms  p95 {figures['p95_ms']:6.2f} ms")


if __name__ == "__main__":
    main()
