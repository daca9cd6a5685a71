"""Where the time of a request goes, sampled in a real gunicorn worker with py-spy.

    python -m bench.profile [--seconds 15] [--slices 100]

Starts our server (deploy/gunicorn.conf.py, one worker so that one process holds every
request; disk + SQLite, fsync on), stores CT slices of 512×512 16-bit, then, for each workload,
runs 4 client threads against it while py-spy samples the worker (all its threads, idle ones
left out, native frames off). Workloads: ``frames/1`` of single-frame slices (native pixels,
``transfer-syntax=*``), STOW of 10 slices a request (512² and 64²), and a study of RLE slices
retrieved as stored and decoded (``--only NAME`` for some). Writes py-spy's collapsed stacks to
bench/results/profile-<workload>.txt and prints, per workload, the share of samples whose
stack holds each step of the path (inclusive), and the leaf functions that take the most
samples (exclusive). py-spy must be allowed to ptrace the worker (root, or
kernel.yama.ptrace_scope=0).
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from pydicom.uid import generate_uid

from bench.run import start_server
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance, phantom
from transcode import transcode

# Steps of the path, named by a function on the stack (py-spy labels frames "function (file:line)").
STEPS = {
    "frames": [
        ("gunicorn: reading the request", "parse (gunicorn/http"),
        ("app, until the answer starts", "__call__ (service/auth.py"),
        ("authentication", "_authenticate (service/__init__.py"),
        ("view: retrieve_frames", "retrieve_frames (service/retrieve/frames_rs.py"),
        ("  catalog: instances of the resource", "instances (storage/catalog.py"),
        ("  catalog: details (metadata, offsets)", "details (storage/catalog.py"),
        ("  metadata JSON parsed", "stored_pixels (service/access/frames.py"),
        ("  frame bodies planned", "frame_bodies (service/access/frames.py"),
        ("answer streamed: multipart parts and blob reads", "_CountingBody.__iter__ (service/auth.py"),
        ("  blob reads (ranged)", "iter_chunks (storage/blobs.py"),
        ("gunicorn: writing to the socket", "Response.write (gunicorn/http/wsgi.py"),
        ("SQLAlchemy, anywhere", "sqlalchemy/"),
    ],
    "study": [
        ("view: retrieve_instances", "retrieve_instances (service/retrieve/wado_rs.py"),
        ("  catalog: instances of the resource", "instances (storage/catalog.py"),
        ("  parts planned", "plan (service/access/instances.py"),
        ("answer streamed", "_CountingBody.__iter__ (service/auth.py"),
        ("  conversions", "convert (service/access/instances.py"),
        ("    frames decoded", "decode_frame (transcode/codecs.py"),
        ("    instance written", "write_streamed (transcode/instance.py"),
        ("    details read (catalog)", "details (storage/catalog.py"),
        ("  blobs opened", "DiskStore.open (storage/blobs.py"),
        ("gunicorn: writing to the socket", "Response.write (gunicorn/http/wsgi.py"),
        ("sendfile", "sendfile (socket.py"),
        ("SQLAlchemy, anywhere", "sqlalchemy/"),
        ("pydicom, anywhere", "pydicom/"),
    ],
    "stow": [
        ("gunicorn: reading the request", "parse (gunicorn/http"),
        ("view: store", "store (service/store/stow_rs.py"),
        ("  body read and parts spooled", "spooled_parts (service/wire/multipart.py"),
        ("    multipart decoding", "_run (service/wire/multipart.py"),
        ("  instance added: header read", "read_header (storage/dataset.py"),
        ("  instance added: pending mark", "mark_pending (storage/catalog.py"),
        ("  instance added: blob written", "put (storage/blobs.py"),
        ("  batch commit: blobs synced (fsync)", "sync (storage/blobs.py"),
        ("  batch commit: catalog rows", "register_many (storage/catalog.py"),
        ("  response model", "response_model (service/store/stow_response.py"),
        ("SQLAlchemy, anywhere", "sqlalchemy/"),
        ("pydicom, anywhere", "pydicom/"),
    ],
}


def worker_pid(master: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout.split()
    if len(out) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {master}, found {out}")
    return int(out[0])


def sample(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
                             "--output", str(out), "--rate", "200", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load(work, seconds: float, clients: int = 4) -> int:
    """Run ``work(session)`` from ``clients`` threads for ``seconds``; how many calls were made."""
    stop, counts = time.monotonic() + seconds, []

    def client():
        session, done = requests.Session(), 0
        while time.monotonic() < stop:
            work(session)
            done += 1
        counts.append(done)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def summary(stacks: Path, steps: list[tuple[str, str]]) -> dict:
    total, inclusive, leaves = 0, collections.Counter(), collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        if leaf.startswith(("_worker (concurrent/futures/thread.py", "EpollSelector.select (", "Condition.wait (",
                            "ThreadWorker.wait_for_and_dispatch_events (")):
            continue   # a thread waiting for work (its leaf is the loop's own frame, blocked in C)
        total += n
        for name, marker in steps:
            if any(marker in f for f in frames):
                inclusive[name] += n
        leaves[frames[-1].split(" (")[0] + " (" + frames[-1].split("(")[-1].split(":")[0].split("/")[-1] + ")"] += n
    share = {name: round(100 * inclusive[name] / total, 1) if total else 0.0 for name, _ in steps}
    top = [(leaf, round(100 * n / total, 1)) for leaf, n in leaves.most_common(12)] if total else []
    return {"busy_samples": total, "inclusive_percent": share, "top_leaves_percent": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--only", action="append", help="profile only these workloads (frames, stow, stow_tiny, "
                                                       "study_as_stored, study_decoded)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dicomweb-profile-"))
    server, url, key, master = start_server(work, {"GUNICORN_CMD_ARGS": "--workers=1"})
    auth = {"Authorization": f"Bearer {key}"}
    report = {}
    try:
        pid = worker_pid(master)
        study, series = generate_uid(), generate_uid()
        slices = [ct_instance(study, series, number=n + 1, rows=512, columns=512, pixels=phantom(512, 512, seed=n))
                  for n in range(args.slices)]
        for start in range(0, len(slices), 10):
            requests.post(url + "/studies", data=multipart_body(slices[start:start + 10]),
                          headers={**auth, **stow_headers()}, timeout=120).raise_for_status()
        listed = requests.get(f"{url}/studies/{study}/series/{series}/instances", headers=auth, timeout=30).json()
        frame_urls = [f"{url}/studies/{study}/series/{series}/instances/{item['00080018']['Value'][0]}/frames/1"
                      for item in listed]
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        cycle = iter(range(1 << 62))

        def frame(session):
            r = session.get(frame_urls[next(cycle) % len(frame_urls)], headers={**auth, "Accept": accept}, timeout=30)
            r.raise_for_status()

        # Ten slices whose study, series and instance UIDs are of a fixed length, made new for each
        # request by replacing their digits: every request stores new instances, and the client
        # spends no CPU making pixels.
        marks = [f"2.25.{k}" + "9" * (38 - len(str(k))) for k in range(1, 13)]

        def stow_of(size: int):
            body = multipart_body([ct_instance(marks[0], marks[1], marks[2 + n], number=n + 1, rows=size,
                                               columns=size, pixels=phantom(size, size, seed=n)) for n in range(10)])
            assert all(body.count(m.encode()) for m in marks[:12])

            def stow(session):
                fresh = body
                for m in marks:
                    fresh = fresh.replace(m.encode(), f"2.25.{random.randrange(10 ** 37, 10 ** 38)}".encode())
                session.post(url + "/studies", data=fresh, headers={**auth, **stow_headers()},
                             timeout=120).raise_for_status()
            return stow

        # A study of small RLE parts (50–150 KB), retrieved as stored and decoded (the default Accept).
        rle_study = generate_uid()
        rle_series = generate_uid()
        rle = [transcode(io.BytesIO(ct_instance(rle_study, rle_series, number=n + 1, rows=512, columns=512,
                                                pixels=phantom(512, 512, seed=n))), "1.2.840.10008.1.2.5",
                         "1.2.840.10008.1.2.1") for n in range(args.slices)]
        for start in range(0, len(rle), 10):
            requests.post(url + "/studies", data=multipart_body(rle[start:start + 10]),
                          headers={**auth, **stow_headers()}, timeout=120).raise_for_status()

        def study_of(accept: str):
            def get(session):
                session.get(f"{url}/studies/{rle_study}", headers={**auth, "Accept": accept},
                            timeout=120).raise_for_status()
            return get

        workloads = {"frames": frame, "stow": stow_of(512), "stow_tiny": stow_of(64),
                     "study_as_stored": study_of('multipart/related; type="application/dicom"; transfer-syntax=*'),
                     "study_decoded": study_of('multipart/related; type="application/dicom"')}
        for name, work_fn in workloads.items():
            if args.only and name not in args.only:
                continue
            out = args.out / f"profile-{name}.txt"
            spy = sample(pid, args.seconds, out)
            time.sleep(0.5)
            calls = load(work_fn, args.seconds - 1)
            _, errors = spy.communicate(timeout=60)
            if spy.returncode:
                raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-400:]}")
            report[name] = {"requests": calls, "per_s": round(calls / (args.seconds - 1), 1),
                            **summary(out, STEPS.get(name, STEPS["stow" if name.startswith("stow") else "study"]))}
    finally:
        server.stop()
    print(json.dumps(report, indent=2))
    (args.out / "profile.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
