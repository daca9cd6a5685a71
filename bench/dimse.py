"""The DIMSE listener beside Orthanc's own DICOM server, in one run, interleaved:

- C-STORE of a series of CT slices (512×512, noisy phantoms, Explicit VR Little Endian) over one
  association with DCMTK's ``storescu``: instances a second, each round a fresh series for each
  server (the same files to both), the order of the two servers alternating.
- C-FIND at STUDY level on one association (pynetdicom as the SCU): the time from the request to
  its final status, p50 and p95 over many queries of one study by its UID, and the same query by
  QIDO-RS on one keep-alive HTTP connection to our gunicorn, for the issue's "≤ QIDO's p50 here";
  and DCMTK's findscu repeating the query on one association (its mean, process and association
  left out).

- C-MOVE of a study (300 slices) to a ``storescp`` (DCMTK, ``--ignore``: it takes and drops), asked
  by ``movescu``: instances a second, interleaved the same way.
- The listener's resident memory while it moves a study of ~1 GB (2,000 slices) to that storescp.

    python -m bench.dimse [--slices 500] [--rounds 3] [--finds 300] [--move-slices 300] [--big-slices 2000]

Orthanc (Debian's, installed by bench.compare.ensure_installed when missing) runs with its storage
synchronous (``SyncStorageArea``) as ours is durable before a success status (fsync).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from bench.compare import ensure_installed
from testbed.server import ROOT, Server, free_port, stop_process
from testbed.synthetic import ct_instance, phantom

KEY = "bench-dimse-key-0123456789"
CALLING = "BENCH"


@dataclass
class Node:
    name: str
    ae_title: str
    port: int
    stop: Callable[[], None]
    qido: str = ""          # ours: the DICOMweb root, for QIDO-RS beside C-FIND
    pid: int = 0            # ours: the listener's process


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout} s")


def start_ours(work: Path, dest_port: int) -> Node:
    port = free_port()
    env = {"DICOMWEB_DATA_DIR": str(work / "ours"), "DICOMWEB_API_KEY": KEY, "DICOMWEB_DIMSE_BIND": f"127.0.0.1:{port}",
           "DICOMWEB_DIMSE_PEERS": f"{CALLING}@127.0.0.1:11119:read+store,DEST@127.0.0.1:{dest_port}:store"}
    server = Server(env, free_port(), work / "ours.log")
    log = open(work / "ours-dimse.log", "wb")
    listener = subprocess.Popen([sys.executable, "-m", "service.cli", "dimse"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}, **env})
    _wait_port(port, listener)

    def stop() -> None:
        stop_process(listener, 30)
        log.close()
        server.stop()
    node = Node("ours", "DICOMWEB", port, stop, server.dicomweb)
    node.pid = listener.pid
    return node


def start_orthanc(work: Path, dest_port: int) -> Node:
    port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomModalities": {"bench": [CALLING, "127.0.0.1", 11119], "dest": ["DEST", "127.0.0.1", dest_port]},
        "StorageDirectory": str(work / "orthanc" / "storage"), "IndexDirectory": str(work / "orthanc" / "index"),
        "StorageCompression": False, "SyncStorageArea": True,
    }
    (work / "orthanc").mkdir(parents=True, exist_ok=True)
    path = work / "orthanc" / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")
    process = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)
    _wait_port(port, process)

    def stop() -> None:
        stop_process(process, 30)
        log.close()
    return Node("orthanc", "ORTHANC", port, stop)


def _slice(args: tuple) -> None:
    path, study, series, number = args
    Path(path).write_bytes(ct_instance(study, series, generate_uid(), number=number, rows=512, columns=512,
                                       pixels=phantom(512, 512, seed=number)))


def make_series(folder: Path, slices: int, pool) -> tuple[str, list[Path]]:  # noqa: ANN001
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    files = [folder / f"{n:05d}.dcm" for n in range(1, slices + 1)]
    pool.map(_slice, [(str(p), study, series, n) for n, p in enumerate(files, 1)])
    return study, files


def store(node: Node, files: list[Path]) -> float:
    """Instances a second of one storescu association."""
    started = time.perf_counter()
    done = subprocess.run(["storescu", "-aet", CALLING, "-aec", node.ae_title, "127.0.0.1", str(node.port),
                           *map(str, files)], capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0 or "Status" in done.stderr and "Success" not in done.stderr and done.stderr.strip():
        raise RuntimeError(f"storescu to {node.name}: {done.stderr[-2000:]}")
    return len(files) / took


def _identifier(study: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    query.PatientName = ""
    query.PatientID = ""
    query.StudyDate = ""
    query.NumberOfStudyRelatedInstances = ""
    return query


def finds(node: Node, studies: list[str], count: int) -> list[float]:
    """Milliseconds from each C-FIND request to its final status, on one association."""
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"no association with {node.name}")
    took = []
    try:
        for n in range(count):
            study = studies[n % len(studies)]
            started = time.perf_counter()
            answers = list(assoc.send_c_find(_identifier(study), StudyRootQueryRetrieveInformationModelFind))
            took.append((time.perf_counter() - started) * 1000)
            pending = [found for status, found in answers if status and status.Status in (0xFF00, 0xFF01)]
            if len(pending) != 1 or answers[-1][0].Status != 0:
                raise RuntimeError(f"C-FIND of {node.name}: {len(pending)} matches, then {answers[-1][0]}")
    finally:
        assoc.release()
    return took


def findscu(node: Node, study: str, repeat: int) -> float:
    """Milliseconds a query of DCMTK's findscu, repeated on one association (``--repeat``): the
    time of ``repeat + 1`` queries less that of one, so that the process and the association are
    left out."""
    def run(times: int) -> float:
        started = time.perf_counter()
        done = subprocess.run(["findscu", "-S", "-aet", CALLING, "-aec", node.ae_title, "--repeat", str(times),
                               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "-k", "PatientName",
                               "-k", "PatientID", "-k", "StudyDate", "-k", "NumberOfStudyRelatedInstances",
                               "127.0.0.1", str(node.port)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"findscu to {node.name}: {done.stderr[-2000:]}")
        return time.perf_counter() - started
    return (run(repeat + 1) - run(1)) / repeat * 1000


def qido(node: Node, studies: list[str], count: int) -> list[float]:
    """Milliseconds of the same search by QIDO-RS, on one keep-alive connection."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    took = []
    for n in range(count):
        started = time.perf_counter()
        r = session.get(f"{node.qido}/studies", params={"StudyInstanceUID": studies[n % len(studies)],
                                                        "includefield": "00100010,00100020,00080020,00201208"})
        took.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200 or len(r.json()) != 1:
            raise RuntimeError(f"QIDO-RS: {r.status_code}")
    return took


def move(node: Node, study: str, count: int) -> float:
    """Instances a second of a C-MOVE of ``study`` to DEST, asked by movescu."""
    started = time.perf_counter()
    done = subprocess.run(["movescu", "-S", "-aet", CALLING, "-aec", node.ae_title, "-aem", "DEST",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                           "127.0.0.1", str(node.port)], capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0 or "Error" in done.stderr:
        raise RuntimeError(f"movescu from {node.name}: {done.stderr[-2000:]}")
    return count / took


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_while(pid: int, work: Callable[[], object]) -> tuple[float, float]:
    """The process's resident MB before ``work`` and at its highest during it (sampled every 20 ms)."""
    import threading

    before, peak, done = resident_mb(pid), 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_mb(pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return before, peak


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--finds", type=int, default=300)
    parser.add_argument("--move-slices", type=int, default=300)
    parser.add_argument("--big-slices", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dimse.jsonl")
    args = parser.parse_args()
    ensure_installed()
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as temporary:
        work = Path(temporary)
        with multiprocessing.Pool() as pool:
            series = [make_series(work / f"series{r}", args.slices, pool) for r in range(args.rounds)]
            moved_study, moved_files = make_series(work / "moved", args.move_slices, pool)
            big_study, big_files = (make_series(work / "big", args.big_slices, pool) if args.big_slices
                                    else (None, []))
        dest_port = free_port()
        receiver = subprocess.Popen(["storescp", "--ignore", "-aet", "DEST", str(dest_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nodes = {"ours": start_ours(work, dest_port), "orthanc": start_orthanc(work, dest_port)}
        try:
            rates: dict[str, list[float]] = {"ours": [], "orthanc": []}
            for r, (_, files) in enumerate(series):
                order = ["ours", "orthanc"] if r % 2 == 0 else ["orthanc", "ours"]
                for name in order:
                    rates[name].append(store(nodes[name], files))
                    print(f"round {r + 1}: C-STORE {name} {rates[name][-1]:.1f} instances/s", flush=True)
            studies = [study for study, _ in series]
            latency: dict[str, list[float]] = {"ours": [], "orthanc": [], "qido": []}
            dcmtk: dict[str, list[float]] = {"ours": [], "orthanc": []}
            for r in range(args.rounds):   # interleaved, in blocks
                for name in (["ours", "orthanc"] if r % 2 == 0 else ["orthanc", "ours"]):
                    latency[name] += finds(nodes[name], studies, args.finds // args.rounds)
                    dcmtk[name].append(findscu(nodes[name], studies[r], args.finds // args.rounds))
                latency["qido"] += qido(nodes["ours"], studies, args.finds // args.rounds)
            moves: dict[str, list[float]] = {"ours": [], "orthanc": []}
            for name in nodes:
                store(nodes[name], moved_files)
            for r in range(args.rounds):
                for name in (["ours", "orthanc"] if r % 2 == 0 else ["orthanc", "ours"]):
                    moves[name].append(move(nodes[name], moved_study, len(moved_files)))
                    print(f"round {r + 1}: C-MOVE {name} {moves[name][-1]:.1f} instances/s", flush=True)
            memory = {}
            if big_files:
                store(nodes["ours"], big_files)
                size = sum(p.stat().st_size for p in big_files)
                before, peak = peak_while(nodes["ours"].pid, lambda: move(nodes["ours"], big_study, len(big_files)))
                small_before, small_peak = peak_while(nodes["ours"].pid,
                                                      lambda: move(nodes["ours"], moved_study, len(moved_files)))
                memory = {"study_mb": round(size / 1e6), "slices": len(big_files), "listener_mb_before": round(before, 1),
                          "listener_mb_peak": round(peak, 1), "small_study_mb": round(sum(p.stat().st_size
                                                                                          for p in moved_files) / 1e6),
                          "small_listener_mb_before": round(small_before, 1), "small_listener_mb_peak": round(small_peak, 1)}
        finally:
            for node in nodes.values():
                node.stop()
            receiver.terminate()
            receiver.wait(10)
    ratios = [a / b for a, b in zip(rates["ours"], rates["orthanc"])]
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "slices": args.slices, "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "c_store_instances_per_s": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "c_store_ratio_median": round(statistics.median(ratios), 2), "c_store_ratios": [round(v, 2) for v in ratios],
        "c_find_ms": {name: {"p50": round(percentile(v, 0.5), 2), "p95": round(percentile(v, 0.95), 2), "n": len(v)}
                      for name, v in latency.items()},
        "findscu_repeat_ms_mean": {name: [round(v, 2) for v in values] for name, values in dcmtk.items()},
        "move_slices": args.move_slices,
        "c_move_instances_per_s": {name: [round(v, 1) for v in values] for name, values in moves.items()},
        "c_move_ratio_median": round(statistics.median([a / b for a, b in zip(moves["ours"], moves["orthanc"])]), 2),
        "listener_memory_while_moving": memory,
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
