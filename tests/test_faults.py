"""Crashes during STOW: a worker killed, then the whole server killed (SIGKILL), restarted.
Every acknowledged instance is there and whole; nothing partial is visible; `dicomweb check`
finds no catalog row without its blob (unreferenced blobs, invisible, are swept)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import requests
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, free_port
from testbed.messages import multipart_body, read, split_multipart, stow_headers
from testbed.server import ROOT, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_workers_and_server_lose_nothing_acknowledged(tmp_path):
    env = {"DICOMWEB_DATA_DIR": str(tmp_path / "var"), "DICOMWEB_API_KEY": API_KEY}
    port = free_port()
    server = Server(env, port, tmp_path / "first.log")
    study = generate_uid()
    acknowledged: dict[str, bytes] = {}
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            batch = [ct_instance(study, generate_uid(), number=n + i, rows=64, columns=64) for i in range(10)]
            n += 10
            try:
                r = requests.post(server.dicomweb + "/studies", data=multipart_body(batch),
                                  headers={**AUTH, **stow_headers()}, timeout=30)
            except requests.RequestException:
                time.sleep(0.05)   # the server is down: what was not acknowledged may or may not be stored
                continue
            if r.status_code == 200:
                for data in batch:
                    acknowledged[str(read(data).SOPInstanceUID)] = data

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.0)
    os.kill(children(server.process.pid)[0], signal.SIGKILL)        # one worker, mid-batch
    time.sleep(1.0)
    for pid in children(server.process.pid) + [server.process.pid]:   # everything at once
        os.kill(pid, signal.SIGKILL)
    server.process.wait()
    time.sleep(0.5)
    restarted = Server(env, port, tmp_path / "second.log")
    server = restarted
    time.sleep(1.0)
    stop.set()
    thread.join(60)
    try:
        assert len(acknowledged) >= 20
        check = subprocess.run([sys.executable, "-m", "service.cli", "check"], cwd=ROOT, capture_output=True,
                               text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")},
                                               **env})
        assert " 0 without their blob" in check.stdout, check.stdout + check.stderr
        r = requests.get(f"{restarted.dicomweb}/studies/{study}", headers={
            **AUTH, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, timeout=60)
        served = {str(read(body).SOPInstanceUID): body for _, body in split_multipart(r.content,
                                                                                     r.headers["Content-Type"])}
        missing = [uid for uid in acknowledged if uid not in served]
        assert missing == [], f"{len(missing)} acknowledged instances lost"
        assert all(served[uid] == data for uid, data in acknowledged.items())
        [row] = requests.get(f"{restarted.dicomweb}/studies", params={"StudyInstanceUID": study}, headers=AUTH).json()
        assert row["00201208"]["Value"] == [len(served)]   # the counts agree with what is there
    finally:
        restarted.stop()


def _kill_all(server) -> None:
    """SIGKILL to the master first (so that it forks no worker to replace the ones killed), then
    to its workers; back once nothing holds the port any more."""
    import socket

    workers = children(server.process.pid)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    for pid in workers + children(server.process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", server.port))
                return
            except OSError:
                time.sleep(0.1)


def test_a_study_killed_while_being_deleted_is_whole_or_gone(tmp_path):
    """SIGKILL to every process of the server at a few moments of a study's DELETE: after a
    restart the study is whole (every instance, its blob and the counts) or gone (and, once the
    sweep has run, so are its blobs); never half of it."""
    import glob

    env = {"DICOMWEB_DATA_DIR": str(tmp_path / "var"), "DICOMWEB_API_KEY": API_KEY,
           "DICOMWEB_API_KEY_PERMISSIONS": "read,store,delete"}
    clean_env = {**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}, **env}
    port = free_port()
    outcomes = []
    for delay in (0.0, 0.03, 0.08):
        server = Server(env, port, tmp_path / f"before-{delay}.log")
        study = generate_uid()
        series = generate_uid()
        for start in range(0, 300, 50):
            batch = [ct_instance(study, series, number=n, rows=16, columns=16) for n in range(start, start + 50)]
            assert requests.post(server.dicomweb + "/studies", data=multipart_body(batch),
                                 headers={**AUTH, **stow_headers()}, timeout=60).status_code == 200
        thread = threading.Thread(target=lambda: _quietly(requests.delete, f"{server.dicomweb}/studies/{study}",
                                                          headers=AUTH, timeout=30))
        thread.start()
        time.sleep(delay)
        _kill_all(server)
        thread.join(30)
        server = Server(env, port, tmp_path / f"after-{delay}.log")
        try:
            found = requests.get(f"{server.dicomweb}/studies", params={"StudyInstanceUID": study}, headers=AUTH).json()
            check = subprocess.run([sys.executable, "-m", "service.cli", "check"], cwd=ROOT, capture_output=True,
                                   text=True, env=clean_env)
            assert " 0 without their blob" in check.stdout, check.stdout + check.stderr
            if found:
                assert found[0]["00201208"]["Value"] == [300]
                r = requests.get(f"{server.dicomweb}/studies/{study}/series/{series}/instances", headers=AUTH).json()
                assert len(r) == 300
                outcomes.append("whole")
            else:
                subprocess.run([sys.executable, "-m", "service.cli", "sweep"], cwd=ROOT, capture_output=True,
                               env=clean_env, check=True)
                assert glob.glob(str(tmp_path / "var" / "blobs" / "*" / "*" / study / "*" / "*.dcm")) == []
                outcomes.append("gone")
        finally:
            server.stop()
    print("delete killed at 0, 30, 80 ms:", outcomes)   # which each moment gives depends on the machine
    assert len(outcomes) == 3


def _quietly(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except requests.RequestException:
        pass
