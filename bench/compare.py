"""Ours against Orthanc, side by side in one run: every workload of issue 15, interleaved.

    python -m bench.compare                      # make bench-compare: the whole run (about 25 minutes)
    python -m bench.compare --rounds 3 --only frames1 --only ohif_ct

Installs Debian's ``orthanc`` + ``orthanc-dicomweb`` (and ``wrk``, ``nginx-light``) if they are
missing, starts our server (deploy/gunicorn.conf.py, disk blobs + SQLite, fsync on) and Orthanc
(``SyncStorageArea: true``, no compression, DICOMweb plugin) on free loopback ports, and nginx
serving each study's files concatenated (what streaming a study can at best approach). Both
servers are loaded with the same synthetic studies through STOW-RS. Each workload then runs on
each server in turn, the order alternating from round to round (A B, B A, A B, ...): the machine's
speed drifts by up to 2x over minutes, so only the ratio within a round is worth quoting. The
table gives each server's median and the median of the per-round ratios with its spread
((max - min) / median); a workload whose spread is wider than --max-spread is run again, once.

Throughput workloads are driven by wrk (4 connections, as a viewer or a pipeline would open);
STOW by client processes posting fresh instances (10 per request, each instance new to the
server); the OHIF series load by 6 processes, as a browser's connection pool, each taking the
next frame of the series until none is left, timed from the metadata request to the last frame.
Server memory is the peak of the PSS summed over the server's processes, sampled all through.

Writes bench/results/compare.json and the table between the compare markers of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.client
import io
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pydicom
from pydicom.uid import generate_uid

from bench.run import connect, server_memory
from testbed.messages import multipart_body
from testbed.server import Server, free_port, stop_process
from testbed.synthetic import ct_instance, phantom

ROOT = Path(__file__).resolve().parent.parent
ELE = "1.2.840.10008.1.2.1"
SYNTAXES = {"ct": ELE, "jpegls": "1.2.840.10008.1.2.4.80", "jpeg_lossless": "1.2.840.10008.1.2.4.70",
            "rle": "1.2.840.10008.1.2.5", "j2k": "1.2.840.10008.1.2.4.90"}
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DEFAULT = 'multipart/related; type="application/dicom"'
FRAMES_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
KEY = "bench-compare-key"
BOUNDARY = "bench-compare"
MARK_BEGIN, MARK_END = "<!-- bench.compare: begin -->", "<!-- bench.compare: end -->"


# -- the servers -------------------------------------------------------------------

def ensure_installed() -> None:
    """Debian's Orthanc, its DICOMweb plugin, wrk and nginx, installed if any is missing."""
    wanted = {"Orthanc": "orthanc", "wrk": "wrk", "nginx": "nginx-light"}
    missing = [package for command, package in wanted.items() if shutil.which(command) is None]
    if not Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so").exists():
        missing.append("orthanc-dicomweb")
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


@dataclass
class Target:
    name: str
    base: str                      # http://127.0.0.1:port
    prefix: str                    # the DICOMweb root under base
    pid: int
    auth: str = ""                 # an Authorization header value, or none
    stop: Callable[[], None] = lambda: None

    @property
    def dicomweb(self) -> str:
        return self.base + self.prefix


def start_ours(work: Path) -> Target:
    server = Server({"DICOMWEB_DATA_DIR": str(work / "ours"), "DICOMWEB_API_KEY": KEY}, free_port(),
                    work / "ours.log")
    return Target("ours", server.base, "/dicom-web", server.process.pid, f"Bearer {KEY}", server.stop)


def start_orthanc(work: Path) -> Target:
    port = free_port()
    config = {
        "Name": "bench", "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageDirectory": str(work / "orthanc" / "storage"),
        "IndexDirectory": str(work / "orthanc" / "index"), "StorageCompression": False,
        "SyncStorageArea": True, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpsVerifyPeers": False,
    }
    (work / "orthanc").mkdir(parents=True, exist_ok=True)
    path = work / "orthanc" / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")
    process = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)
    _wait_http(f"http://127.0.0.1:{port}/system", process)

    def stop() -> None:
        stop_process(process, 30)
        log.close()
    return Target("orthanc", f"http://127.0.0.1:{port}", "/dicom-web", process.pid, "", stop)


def start_nginx(work: Path, root: Path) -> Target:
    port = free_port()
    (work / "nginx").mkdir(exist_ok=True)
    conf = work / "nginx" / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}
worker_processes auto;
pid {work / 'nginx' / 'nginx.pid'};
error_log {work / 'nginx' / 'error.log'};
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {work / 'nginx'};
    proxy_temp_path {work / 'nginx'};
    fastcgi_temp_path {work / 'nginx'};
    uwsgi_temp_path {work / 'nginx'};
    scgi_temp_path {work / 'nginx'};
    server {{ listen 127.0.0.1:{port}; root {root}; default_type application/octet-stream; }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    _wait_http(f"http://127.0.0.1:{port}/", process, ok=(200, 403, 404))
    return Target("nginx", f"http://127.0.0.1:{port}", "", process.pid, "", lambda: stop_process(process, 10))


def _wait_http(url: str, process: subprocess.Popen, ok: tuple[int, ...] = (200,), timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early")
        try:
            if requests.get(url, timeout=1).status_code in ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


# -- the data ----------------------------------------------------------------------

@dataclass
class Series:
    name: str
    study: str
    series: str
    instances: list[str]
    files: list[Path]
    frames: int = 1

    def instance_path(self, index: int = 0) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.instances[index]}"


def _slice(args: tuple) -> None:
    """One phantom slice written in its syntax (a process-pool task: encoding takes time)."""
    path, study, series, number, syntax = args
    from transcode import transcode

    data = ct_instance(study, series, generate_uid(), number=number, rows=512, columns=512,
                       pixels=phantom(512, 512, seed=number))
    if syntax != ELE:
        data = transcode(io.BytesIO(data), syntax, ELE)
    Path(path).write_bytes(data)


def make_series(directory: Path, name: str, slices: int, pool: multiprocessing.pool.Pool) -> Series:
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    files = [folder / f"{n:05d}.dcm" for n in range(1, slices + 1)]
    pool.map(_slice, [(str(p), study, series, n, SYNTAXES[name]) for n, p in enumerate(files, 1)])
    instances = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    return Series(name, study, series, instances, files)


def make_multiframe(directory: Path, frames: int) -> Series:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    path = directory / "multiframe.dcm"
    path.write_bytes(ct_instance(study, series, sop, rows=512, columns=512, frames=frames))
    return Series("multiframe", study, series, [sop], [path], frames)


def _headers(target: Target, **extra: str) -> dict[str, str]:
    return {**extra, **({"Authorization": target.auth} if target.auth else {})}


def post_stow(conn: http.client.HTTPConnection, target: Target, body: bytes) -> int:
    """One STOW-RS request; the number of instances the server says it stored."""
    conn.request("POST", target.prefix + "/studies", body=body, headers=_headers(
        target, **{"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                   "Accept": "application/dicom+json"}))
    response = conn.getresponse()
    answer = response.read()
    if response.status != 200:
        raise RuntimeError(f"{target.name}: STOW answered {response.status}: {answer[:300]!r}")
    return len(json.loads(answer).get("00081199", {}).get("Value", []))


def load(target: Target, files: list[Path], per_request: int = 10) -> None:
    conn = connect(target.base)[0]
    for i in range(0, len(files), per_request):
        batch = files[i:i + per_request]
        stored = post_stow(conn, target, multipart_body([p.read_bytes() for p in batch], BOUNDARY))
        if stored != len(batch):
            raise RuntimeError(f"{target.name} stored {stored} of {len(batch)} instances")


# -- measurements: wrk -------------------------------------------------------------

WRK_SCRIPT = """
local paths, headers = {}, {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  headers["Accept"] = args[2]
  if args[3] ~= nil and args[3] ~= "" then headers["Authorization"] = args[3] end
  i = math.random(#paths) - 1
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end
"""


def wrk(target: Target, paths: list[str], accept: str, seconds: float, connections: int, work: Path,
        warming: bool = False) -> dict:
    """Requests/s and MB/s of wrk cycling over ``paths`` (each a path under the target's base). A
    window in which no answer ended (answers longer than it, on a slow day: a decoded 300-slice
    study) is run again four times as long, up to two minutes, rather than counted as nothing."""
    while True:
        try:
            return _wrk(target, paths, accept, seconds, connections, work, warming)
        except _NothingEnded:
            if seconds >= 120:
                raise RuntimeError(f"{target.name} {paths[0]}: no answer ended within {seconds:.0f} s") from None
            seconds = min(120, seconds * 4)
            print(f"  {target.name}: no answer ended in the window, measured again over {seconds:.0f} s",
                  file=sys.stderr, flush=True)


class _NothingEnded(Exception):
    pass


def _wrk(target: Target, paths: list[str], accept: str, seconds: float, connections: int, work: Path,
         warming: bool) -> dict:
    listing = work / f"paths-{os.getpid()}-{threading.get_ident()}.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = work / "cycle.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "120s",
         "--latency", "-s", str(script), target.base, "--", str(listing), accept, target.auth],
        capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    out = out.stdout
    requests_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    # A read error is the server closing the connection after an answer (Orthanc does after some
    # multipart answers; wrk reconnects): the answer was whole, so it counts, as does the reconnect.
    connect, _, write, timeout = (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0)
    if bad or connect or write or timeout:
        raise RuntimeError(f"{target.name} {paths[0]}: wrk saw failures:\n{out}")
    if int(total.group(1)) == 0 and not warming:
        raise _NothingEnded()
    units = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    read = float(total.group(4)) * units[total.group(5)]
    elapsed = float(total.group(2)) * {"s": 1, "m": 60, "ms": 1e-3}[total.group(3)]
    to_ms = {"us": 1e-3, "ms": 1, "s": 1000}
    return {"rate": requests_per_s, "MB_per_s": round(read / elapsed / 1e6, 1), "requests": int(total.group(1)),
            "p50_ms": round(float(p50.group(1)) * to_ms[p50.group(2)], 2) if p50 else None}


# -- measurements: STOW and the series load, in client processes ----------------------

def _stow_client(target: Target, batches: int, per_request: int, size: int, barrier, results) -> None:  # noqa: ANN001
    study = generate_uid()
    bodies = []
    for b in range(batches):
        series = generate_uid()
        bodies.append(multipart_body([ct_instance(study, series, number=n + 1, rows=size, columns=size,
                                                  seed=b * per_request + n) for n in range(per_request)], BOUNDARY))
    conn = connect(target.base)[0]
    barrier.wait()
    started = time.perf_counter()
    stored = sum(post_stow(conn, target, body) for body in bodies)
    results.put((stored, time.perf_counter() - started))


def stow(target: Target, clients: int, batches: int, per_request: int, size: int) -> dict:
    """Instances/s of ``clients`` processes each posting ``batches`` requests of new instances."""
    barrier, results = multiprocessing.Barrier(clients + 1), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_stow_client, args=(target, batches, per_request, size, barrier,
                                                                    results)) for _ in range(clients)]
    for p in processes:
        p.start()
    barrier.wait(timeout=600)
    started = time.perf_counter()
    outcomes = [results.get(timeout=900) for _ in processes]
    wall = time.perf_counter() - started
    for p in processes:
        p.join()
    stored = sum(o[0] for o in outcomes)
    if stored != clients * batches * per_request:
        raise RuntimeError(f"{target.name} stored {stored} instances of {clients * batches * per_request}")
    return {"rate": stored / wall, "instances": stored, "seconds": round(wall, 2)}


_pool_connections: dict[str, http.client.HTTPConnection] = {}


def _get_frame(args: tuple[str, str, str]) -> int:
    base, path, auth = args
    headers = {"Accept": FRAMES_ANY, **({"Authorization": auth} if auth else {})}
    for attempt in (1, 2):   # a connection the server closed while idle is opened again, as a browser does
        conn = _pool_connections.get(base) or _pool_connections.setdefault(base, connect(base)[0])
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            break
        except (http.client.RemoteDisconnected, ConnectionError):
            conn.close()
            del _pool_connections[base]
            if attempt == 2:
                raise
    size = len(response.read())
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}")
    return size


def series_load(target: Target, series: Series, pool: multiprocessing.pool.Pool) -> dict:
    """OHIF's load of a series: its metadata, then frame 1 of every instance over 6 connections."""
    started = time.perf_counter()
    conn = connect(target.base)[0]
    conn.request("GET", f"{target.prefix}/studies/{series.study}/series/{series.series}/metadata",
                 headers=_headers(target, Accept="application/dicom+json"))
    response = conn.getresponse()
    listed = json.loads(response.read())
    if response.status != 200 or len(listed) != len(series.instances):
        raise RuntimeError(f"{target.name}: series metadata answered {response.status}, {len(listed)} instances")
    uids = [item["00080018"]["Value"][0] for item in listed]
    frames = [(target.base, f"{target.prefix}/studies/{series.study}/series/{series.series}/instances/{uid}/frames/1",
               target.auth) for uid in uids]
    received = sum(pool.map(_get_frame, frames, chunksize=1))
    seconds = time.perf_counter() - started
    return {"rate": 1 / seconds, "seconds": round(seconds, 3), "MB": round(received / 1e6, 1)}


# -- the workloads ------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    title: str
    unit: str
    run: Callable[[Target], dict]
    targets: tuple[str, ...] = ("ours", "orthanc")
    target_ratio: float | None = None
    # (path under the DICOMweb root, Accept) Orthanc may answer with an error (it cannot decode
    # JPEG 2000): asked first, and where it refuses, only ours is measured and the status recorded.
    refused_probe: tuple[str, str] | None = None


@dataclass
class Context:
    work: Path
    seconds: float
    connections: int
    series: dict[str, Series] = field(default_factory=dict)
    pool: multiprocessing.pool.Pool | None = None
    thumbnail_path: dict[str, str] = field(default_factory=dict)
    warming: bool = False              # the unmeasured first pass: 1-second runs


def workloads(ctx: Context) -> list[Workload]:
    s = ctx.series
    ct, multiframe = s["ct"], s["multiframe"]

    def get(paths_of: Callable[[Target], list[str]], accept: str, seconds: float | None = None):
        return lambda t: wrk(t, paths_of(t), accept, 1 if ctx.warming else seconds or ctx.seconds,
                             ctx.connections, ctx.work, ctx.warming)

    def under_prefix(paths: list[str]) -> Callable[[Target], list[str]]:
        return lambda t: [t.prefix + p for p in paths]

    def study_paths(name: str) -> Callable[[Target], list[str]]:
        return lambda t: [f"/{name}.bin"] if t.name == "nginx" else [f"{t.prefix}/studies/{s[name].study}"]

    frame_paths = [ct.instance_path(i) + "/frames/1" for i in range(len(ct.instances))]
    sixteen = multiframe.instance_path() + "/frames/" + ",".join(str(n) for n in range(1, 17))
    instance_paths = [ct.instance_path(i) for i in range(len(ct.instances))]
    wado_uri = [f"/wado?requestType=WADO&studyUID={ct.study}&seriesUID={ct.series}&objectUID={uid}"
                "&contentType=application/dicom" for uid in ct.instances]
    study_time = ctx.seconds * 1.5
    result = [
        Workload("frames1", f"`frames/1`, native, single-frame 512² CT slices ({len(frame_paths)}, in turn)", "frames/s",
                 get(under_prefix(frame_paths), FRAMES_ANY), target_ratio=1.2),
        Workload("frames16", "`frames/1,2,…,16` of a 512² multi-frame instance", "requests/s",
                 get(under_prefix([sixteen]), FRAMES_ANY), target_ratio=1.2),
        Workload("ohif_ct", f"OHIF series load, {len(ct.files)} uncompressed slices (metadata, then 6 connections)", "series/s",
                 lambda t: series_load(t, ct, ctx.pool), target_ratio=1.2),
        Workload("ohif_jpegls", f"OHIF series load, {len(s['jpegls'].files)} JPEG-LS slices, as stored", "series/s",
                 lambda t: series_load(t, s["jpegls"], ctx.pool), target_ratio=1.2),
        Workload("stow_ct", "STOW, 525 KB slices, 10 a request, 4 clients, durable", "instances/s",
                 lambda t: stow(t, 4, 15, 10, 512), target_ratio=1.0),
        Workload("stow_tiny", "STOW, 64² slices (8 KB), 10 a request, 4 clients, durable", "instances/s",
                 lambda t: stow(t, 4, 50, 10, 64), target_ratio=1.1),
    ]
    for name, label in (("ct", "uncompressed"), ("jpegls", "JPEG-LS"), ("jpeg_lossless", "JPEG lossless"),
                        ("rle", "RLE"), ("j2k", "JPEG 2000")):
        size = sum(p.stat().st_size for p in s[name].files) / len(s[name].files) / 1000
        result.append(Workload(f"study_{name}", f"study as stored, {label} ({len(s[name].files)} × {size:.0f} KB)",
                               "studies/s", get(study_paths(name), AS_STORED, study_time),
                               ("ours", "orthanc", "nginx"), 1.2))
    for name, label in (("ct", "uncompressed"), ("jpegls", "JPEG-LS"), ("jpeg_lossless", "JPEG lossless"),
                        ("rle", "RLE"), ("j2k", "JPEG 2000")):
        result.append(Workload(f"default_{name}", f"study, default Accept (decoded), {label}", "studies/s",
                               get(study_paths(name), DEFAULT, study_time * 2), target_ratio=1.2 if name != "ct" else None,
                               refused_probe=(f"/studies/{s[name].study}", DEFAULT) if name == "j2k" else None))
    result += [
        Workload("rendered", "rendered JPEG of a 512² CT slice", "images/s",
                 get(under_prefix([p + "/rendered" for p in instance_paths]), "image/jpeg"), target_ratio=1.2),
        Workload("thumbnail", "thumbnail of a 512² CT slice", "images/s",
                 get(lambda t: [t.prefix + p + ctx.thumbnail_path[t.name] for p in instance_paths], "image/jpeg"),
                 target_ratio=1.2),
        Workload("instance", "single instance, as stored (multipart)", "instances/s",
                 get(under_prefix(instance_paths), AS_STORED)),
        Workload("wado_uri", "WADO-URI, application/dicom", "instances/s", get(lambda t: wado_uri, "*/*")),
        Workload("metadata", f"series metadata, {len(ct.files)} instances", "requests/s",
                 get(under_prefix([f"/studies/{ct.study}/series/{ct.series}/metadata"]), "application/dicom+json")),
        Workload("qido_instances", f"QIDO, the {len(ct.files)} instances of a series", "requests/s",
                 get(under_prefix([f"/studies/{ct.study}/series/{ct.series}/instances"]), "application/dicom+json")),
        Workload("qido_studies", "QIDO, studies by PatientID", "requests/s",
                 get(under_prefix(["/studies?PatientID=PAT-1"]), "application/dicom+json")),
    ]
    # Last: the instances STOW adds change every later workload (Orthanc's reads and searches
    # slow down as its index grows: its single-instance rate fell by two thirds after them).
    return [w for w in result if not w.name.startswith("stow")] + [w for w in result if w.name.startswith("stow")]


def measure(workload: Workload, targets: dict[str, Target], rounds: int) -> dict:
    """Run ``workload`` on each target, ``rounds`` times, the order alternating."""
    order = [targets[n] for n in workload.targets]
    runs: dict[str, list[dict]] = {t.name: [] for t in order}
    for r in range(rounds):
        for target in (order if r % 2 == 0 else order[::-1]):
            runs[target.name].append(workload.run(target))
    rates = {name: [round(run["rate"], 3) for run in values] for name, values in runs.items()}
    row = {"title": workload.title, "unit": workload.unit, "target_ratio": workload.target_ratio, "rates": rates,
           "runs": runs, "median": {name: statistics.median(v) for name, v in rates.items()},
           "ratio": None, "ratio_spread": 0.0}
    if "orthanc" in rates:
        ratios = [a / b for a, b in zip(rates["ours"], rates["orthanc"])]
        row.update(ratio=statistics.median(ratios), ratio_spread=(max(ratios) - min(ratios)) / statistics.median(ratios),
                   ratios=[round(x, 3) for x in ratios])
    if "nginx" in rates:
        row["of_nginx"] = statistics.median(a / b for a, b in zip(rates["ours"], rates["nginx"]))
    return row


def refusal(target: Target, path: str, accept: str) -> int | None:
    """The status of a GET of ``path`` if it is an error, else None."""
    conn = connect(target.base)[0]
    conn.request("GET", path, headers=_headers(target, Accept=accept))
    response = conn.getresponse()
    response.read()
    return response.status if response.status >= 400 else None


class MemorySampler(threading.Thread):
    """The peak PSS summed over each server's processes, sampled every 100 ms."""

    def __init__(self, targets: list[Target]) -> None:
        super().__init__(daemon=True)
        self.targets, self.peak = targets, {t.name: 0 for t in targets}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for t in self.targets:
                self.peak[t.name] = max(self.peak[t.name], server_memory(t.pid)[1])
            time.sleep(0.1)


# -- the report ---------------------------------------------------------------------

def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def cells(row: dict) -> list[str]:
    """ours, Orthanc, the ratio with its spread, the target, ours against nginx."""
    m = row["median"]
    if row["ratio"] is None:
        theirs, ratio, met = f"answers {row.get('orthanc_refused')}", "", ""
    else:
        theirs, ratio = fmt(m["orthanc"]), f"**{row['ratio']:.2f}×** ({row['ratio_spread']:.0%})"
        met = "" if row["target_ratio"] is None else (
            f"≥ {row['target_ratio']}× {'met' if row['ratio'] >= row['target_ratio'] else '**not met**'}")
    nginx = f"{row['of_nginx']:.2f}× (nginx {fmt(m['nginx'])})" if "of_nginx" in row else ""
    return [fmt(m["ours"]), theirs, ratio, met, nginx]


def table(rows: dict[str, dict], memory: dict[str, float]) -> str:
    lines = ["| workload | unit | ours | Orthanc | ours / Orthanc (spread) | target | nginx static: ours / nginx |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows.values():
        lines.append(f"| {row['title']} | {row['unit']} | " + " | ".join(cells(row)) + " |")
    mb = 2 ** 20
    lines.append(f"| server memory, peak PSS over the run | MB | {memory['ours'] / mb:.0f} | "
                 f"{memory['orthanc'] / mb:.0f} | | ≤ 250 MB (ours) | |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    current = docs.read_text()
    if MARK_BEGIN in current:
        head, rest = current.split(MARK_BEGIN, 1)
        current = head + MARK_BEGIN + "\n" + text + "\n" + MARK_END + rest.split(MARK_END, 1)[1]
    else:
        current += f"\n{MARK_BEGIN}\n{text}\n{MARK_END}\n"
    docs.write_text(current)


def write_report(args: argparse.Namespace, rows: dict, memory: dict) -> dict:
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "seconds": args.seconds,
              "connections": args.connections, "workloads": rows, "peak_pss": memory,
              "command": "python -m bench.compare " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--slices", type=int, default=300, help="slices of the uncompressed and JPEG-LS series")
    parser.add_argument("--small-slices", type=int, default=50, help="slices of the RLE, JPEG lossless, J2K studies")
    parser.add_argument("--max-spread", type=float, default=0.2)
    parser.add_argument("--only", action="append", help="run only these workloads (by name)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    parser.add_argument("--no-docs", action="store_true", help="do not write the table into docs/benchmarks.md")
    args = parser.parse_args()

    ensure_installed()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    ctx = Context(work, args.seconds, args.connections)
    generation = multiprocessing.Pool(os.cpu_count())
    print("generating the studies", flush=True)
    for name in SYNTAXES:
        ctx.series[name] = make_series(work / "data", name, args.slices if name in ("ct", "jpegls") else
                                       args.small_slices, generation)
    generation.close()
    ctx.series["multiframe"] = make_multiframe(work / "data", 32)
    static = work / "static"
    static.mkdir(exist_ok=True)
    for name in SYNTAXES:
        with open(static / f"{name}.bin", "wb") as out:
            for p in ctx.series[name].files:
                out.write(p.read_bytes())

    targets: dict[str, Target] = {}
    try:
        targets["ours"], targets["orthanc"] = start_ours(work), start_orthanc(work)
        targets["nginx"] = start_nginx(work, static)
        for target in (targets["ours"], targets["orthanc"]):
            print(f"loading {target.name}", flush=True)
            for series in ctx.series.values():
                load(target, series.files)
            # Not every DICOMweb server has /thumbnail (Orthanc's plugin 1.7 has not): the same image,
            # a 128-pixel viewport of the rendered resource, where it is missing.
            probe = f"{target.prefix}{ctx.series['ct'].instance_path()}/thumbnail"
            conn = connect(target.base)[0]
            conn.request("GET", probe, headers=_headers(target, Accept="image/jpeg"))
            response = conn.getresponse()
            response.read()
            ctx.thumbnail_path[target.name] = "/thumbnail" if response.status == 200 else "/rendered?viewport=128,128"
        ctx.pool = multiprocessing.Pool(6)
        sampler = MemorySampler([targets["ours"], targets["orthanc"]])
        sampler.start()
        rows: dict[str, dict] = {}
        for workload in workloads(ctx):
            if args.only and workload.name not in args.only:
                continue
            refused = workload.refused_probe and refusal(targets["orthanc"], targets["orthanc"].prefix
                                                         + workload.refused_probe[0], workload.refused_probe[1])
            if refused:
                workload = dataclasses.replace(workload, targets=("ours",))
            ctx.warming = True              # a first pass unmeasured: caches, connections, worker warm-up
            for t in workload.targets:
                workload.run(targets[t])
            ctx.warming = False
            row = measure(workload, targets, args.rounds)
            if row["ratio_spread"] > args.max_spread:
                print(f"{workload.name}: spread {row['ratio_spread']:.0%}, run again", flush=True)
                row = measure(workload, targets, args.rounds)
                row["repeated"] = True
            if refused:
                row["orthanc_refused"] = refused
            rows[workload.name] = row
            print(f"{workload.name:22} " + " | ".join(cells(row)), flush=True)
            write_report(args, rows, dict(sampler.peak))   # so far: a run cut short keeps what it measured
        sampler.stopping.set()
        sampler.join()
        memory = dict(sampler.peak)
    finally:
        if ctx.pool:
            ctx.pool.terminate()
        for target in targets.values():
            target.stop()
    report = write_report(args, rows, memory)
    text = table(rows, memory)
    print(text)
    if not args.no_docs and not args.only:
        write_docs(f"Run of {report['date']} (`{report['command'].strip()}`, {args.rounds} rounds, "
                   f"`bench/results/{args.out.name}`):\n\n{text}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
