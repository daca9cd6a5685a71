"""DICOMweb benchmark: STOW-RS instances/s, WADO-RS MB/s and requests/s, server memory while streaming.

    python -m bench.run --start                   # start our server (gunicorn, temp data dir) and measure it
    python -m bench.run --url http://127.0.0.1:8042/dicom-web --pid 1234   # any DICOMweb server

Clients are separate processes (4 by default) with persistent HTTP/1.1
connections, so the client's GIL is not the limit. Generation of the data is
not timed. See docs/benchmarks.md for figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from testbed.synthetic import StudySpec, study

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DEFAULT = 'multipart/related; type="application/dicom"'
BOUNDARY = "bench-boundary-7d1f"


def connect(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=300), parts.path.rstrip("/")


def headers(key: str | None, **extra: str) -> dict[str, str]:
    h = dict(extra)
    if key:
        h["Authorization"] = f"Bearer {key}"
    return h


def drain(response: http.client.HTTPResponse, buffer: bytearray) -> int:
    view = memoryview(buffer)
    total = 0
    while n := response.readinto(view):
        total += n
    return total


# -- data ----------------------------------------------------------------------

def generate(directory: Path, spec: StudySpec, studies: int) -> list[list[Path]]:
    """Write ``studies`` synthetic studies as files; return their paths per study."""
    result = []
    for s in range(studies):
        folder = directory / f"study{s}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (*_, data) in enumerate(study(spec)):
            path = folder / f"{i:05d}.dcm"
            path.write_bytes(data)
            paths.append(path)
        result.append(paths)
    return result


def multipart(paths: list[Path]) -> bytes:
    chunks = []
    for path in paths:
        chunks.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(path.read_bytes())
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


# -- client processes ------------------------------------------------------------

def post_stows(url: str, key: str | None, bodies: list[bytes], content_type: str) -> tuple[int, float]:
    """POST each STOW-RS body in turn on one connection: (instances stored, seconds)."""
    conn, path = connect(url)
    h = headers(key, **{"Content-Type": content_type, "Accept": "application/dicom+json"})
    start = time.perf_counter()
    stored = 0
    for body in bodies:
        conn.request("POST", path + "/studies", body=body, headers=h)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"STOW answered {response.status}: {answer[:300]!r}")
        stored += len(json.loads(answer)["00081199"]["Value"])
    return stored, time.perf_counter() - start


def _stow_worker(url: str, key: str | None, batches: list[list[str]], results) -> None:  # noqa: ANN001
    bodies = [multipart([Path(p) for p in batch]) for batch in batches]
    results.put(post_stows(url, key, bodies, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'))


def _get_worker(url: str, key: str | None, resource: str, accept: str, repeat: int, results) -> None:  # noqa: ANN001
    conn, path = connect(url)
    buffer = bytearray(4 << 20)
    h = headers(key, Accept=accept)
    total = 0
    start = time.perf_counter()
    for _ in range(repeat):
        conn.request("GET", path + resource, headers=h)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {resource} answered {response.status}: {response.read()[:300]!r}")
        total += drain(response, buffer)
    results.put((total, time.perf_counter() - start))


def timed_gets(url: str, key: str | None, paths: list[str], accept: str, results) -> None:  # noqa: ANN001
    """GET each path in turn on one persistent connection; put the list of durations."""
    conn, base = connect(url)
    h = headers(key, Accept=accept)
    timings = []
    for path in paths:
        start = time.perf_counter()
        conn.request("GET", base + path, headers=h)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
        timings.append(time.perf_counter() - start)
    results.put(timings)


def run_clients(target, args_per_client: list[tuple]) -> list[tuple]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=target, args=(*a, queue)) for a in args_per_client]
    for p in processes:
        p.start()
    results = []
    while len(results) < len(processes):
        try:
            results.append(queue.get(timeout=1))
        except Exception:  # queue.Empty: check that no client died
            if any(p.exitcode for p in processes):
                for p in processes:
                    p.kill()
                raise RuntimeError("a client process failed") from None
    for p in processes:
        p.join()
    return results


def latency(samples: list[float], digits: int = 1) -> dict:
    """p50 and p95 in milliseconds of request durations in seconds."""
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, digits),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, digits)}


# -- measurements -----------------------------------------------------------------

def stow(url: str, key: str | None, paths: list[Path], clients: int, per_request: int) -> dict:
    batches = [[str(p) for p in paths[i:i + per_request]] for i in range(0, len(paths), per_request)]
    shares = [batches[c::clients] for c in range(clients)]
    began = time.perf_counter()
    results = run_clients(_stow_worker, [(url, key, share) for share in shares])
    wall = time.perf_counter() - began
    stored = sum(r[0] for r in results)
    slowest = max(r[1] for r in results)
    return {"instances": stored, "seconds": round(slowest, 3), "instances_per_s": round(stored / slowest, 1),
            "wall_seconds": round(wall, 3)}


def retrieve(url: str, key: str | None, resource: str, accept: str, clients: int, repeat: int) -> dict:
    results = run_clients(_get_worker, [(url, key, resource, accept, repeat)] * clients)
    total = sum(r[0] for r in results)
    slowest = max(r[1] for r in results)
    return {"requests": clients * repeat, "bytes": total, "seconds": round(slowest, 3),
            "MB_per_s": round(total / slowest / 1e6, 1), "requests_per_s": round(clients * repeat / slowest, 1)}


def _status_kb(pid: int, field: str) -> int:
    path = Path(f"/proc/{pid}/smaps_rollup" if field == "Pss:" else f"/proc/{pid}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def server_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid] + ([int(c) for c in children.read_text().split()] if children.exists() else [])


def server_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over a server process and its children, in bytes.

    RSS counts library pages shared between forked workers once per process;
    PSS divides them among the sharers, so its sum is what the server really uses.
    """
    pids = server_pids(pid)
    return sum(_status_kb(p, "VmRSS:") for p in pids), sum(_status_kb(p, "Pss:") for p in pids)


def worker_rss(pid: int) -> list[int]:
    return [_status_kb(p, "VmRSS:") for p in server_pids(pid)[1:]]


def memory_while_streaming(url: str, key: str | None, pid: int, resource: str, accept: str) -> dict:
    before_rss, before_pss = server_memory(pid)
    before_workers = worker_rss(pid)
    peak = {"rss": before_rss, "pss": before_pss, "workers": list(before_workers)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, pss = server_memory(pid)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            now = worker_rss(pid)
            if len(now) == len(peak["workers"]):
                peak["workers"] = [max(a, b) for a, b in zip(peak["workers"], now)]
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = retrieve(url, key, resource, accept, 1, 1)
    finally:
        stop.set()
        sampler.join()
    growth = [after - before for after, before in zip(peak["workers"], before_workers)]
    mb = 2**20
    return {"bytes_streamed": result["bytes"], "MB_per_s": result["MB_per_s"],
            "server_rss_sum_before_MB": round(before_rss / mb, 1), "server_rss_sum_peak_MB": round(peak["rss"] / mb, 1),
            "server_pss_before_MB": round(before_pss / mb, 1), "server_pss_peak_MB": round(peak["pss"] / mb, 1),
            "max_worker_rss_growth_MB": round(max(growth, default=0) / mb, 1)}


def study_uid_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def instance_resource(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def start_server(data_dir: Path, extra_env: dict[str, str]):
    from testbed.server import free_port
    from testbed.server import Server

    env = {"DICOMWEB_DATA_DIR": str(data_dir / "var"), "DICOMWEB_API_KEY": "bench-key", **extra_env}
    server = Server(env, free_port(), data_dir / "gunicorn.log")
    return server, server.dicomweb, "bench-key", server.process.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="DICOMweb base URL of a running server")
    parser.add_argument("--key", help="API key for the server (Authorization: Bearer)")
    parser.add_argument("--pid", type=int, help="server master PID, for memory figures")
    parser.add_argument("--start", action="store_true", help="start our server under gunicorn in a temp dir")
    parser.add_argument("--no-fsync", action="store_true", help="with --start: DICOMWEB_FSYNC=off")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--slices", type=int, default=100, help="CT slices per study (512x512x16 bit)")
    parser.add_argument("--stow-studies", type=int, default=4, help="studies stored in the STOW measurement")
    parser.add_argument("--big-study-gb", type=float, default=1.05, help="size of the memory test study; 0 skips")
    parser.add_argument("--repeat", type=int, default=5, help="study retrieves per client")
    parser.add_argument("--single-requests", type=int, default=500, help="single-instance GETs per client")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    if args.start:
        server, url, key, pid = start_server(workdir, {"DICOMWEB_FSYNC": "off"} if args.no_fsync else {})
    else:
        if not args.url:
            parser.error("give --url of a server, or --start")
        url, key, pid = args.url, args.key, args.pid
    report: dict = {"url": url, "clients": args.clients, "slices_per_study": args.slices}
    try:
        spec = StudySpec(series=1, instances_per_series=args.slices, rows=512, columns=512)
        studies = generate(workdir / "data", spec, args.stow_studies)
        all_paths = [p for s in studies for p in s]
        report["instance_bytes"] = all_paths[0].stat().st_size
        report["stow"] = stow(url, key, all_paths, args.clients, per_request=10)
        study_resource = f"/studies/{study_uid_of(studies[0][0])}"
        report["study_bytes"] = sum(p.stat().st_size for p in studies[0])
        report["retrieve_study_as_stored"] = retrieve(url, key, study_resource, ANY, args.clients, args.repeat)
        report["retrieve_study_default"] = retrieve(url, key, study_resource, DEFAULT, args.clients, args.repeat)
        # Multipart, as every DICOMweb server offers it (Orthanc has no single-part application/dicom).
        report["retrieve_instance"] = retrieve(url, key, instance_resource(studies[0][0]), ANY, args.clients,
                                               args.single_requests)
        if args.big_study_gb and pid:
            slices = int(args.big_study_gb * 1e9 / report["instance_bytes"]) + 1
            big = generate(workdir / "big", StudySpec(series=1, instances_per_series=slices), 1)[0]
            stow(url, key, big, args.clients, per_request=10)
            resource = f"/studies/{study_uid_of(big[0])}"
            report["memory_streaming_as_stored"] = memory_while_streaming(url, key, pid, resource, ANY)
            report["memory_streaming_default"] = memory_while_streaming(url, key, pid, resource, DEFAULT)
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
