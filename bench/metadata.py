"""WADO-RS metadata latency: a 100-instance and a 1,000-instance study, 4 concurrent clients.

    python -m bench.metadata --start            # our server, fresh, disk + SQLite
    python -m bench.metadata --url URL [--key]  # any DICOMweb server (studies are stored first)
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

from bench.run import latency, run_clients
from testbed.synthetic import StudySpec, study

BOUNDARY = "bench-metadata"


def store_study(url: str, key: str | None, instances: int) -> str:
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
               "Accept": "application/dicom+json", **({"Authorization": f"Bearer {key}"} if key else {})}
    spec = StudySpec(series=max(1, instances // 100), instances_per_series=min(100, instances), rows=64, columns=64)
    parts, study_uid = [], None
    for study_uid, _, _, data in study(spec):
        parts.append(data)
        if len(parts) == 50:
            _post(url, headers, parts)
            parts = []
    if parts:
        _post(url, headers, parts)
    return study_uid


def _post(url: str, headers: dict, parts: list[bytes]) -> None:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    r = requests.post(url.rstrip("/") + "/studies", data=body + f"--{BOUNDARY}--\r\n".encode(), headers=headers,
                      timeout=300)
    r.raise_for_status()


def _client(url: str, key: str | None, path: str, encoding: str, repeat: int, results) -> None:  # noqa: ANN001
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": encoding,
               **({"Authorization": f"Bearer {key}"} if key else {})}
    timings, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        timings.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
        size = len(body)
    results.put((timings, size))


def measure(url: str, key: str | None, path: str, encoding: str, clients: int, repeat: int) -> dict:
    _client(url, key, path, encoding, 2, multiprocessing.Queue())   # warm up
    gathered = run_clients(_client, [(url, key, path, encoding, repeat)] * clients)
    samples = [t for timings, _ in gathered for t in timings]
    return {"requests": len(samples), "bytes": gathered[0][1], **latency(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--start", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    server = None
    if args.start:
        from bench.run import start_server

        server, url, key, _ = start_server(Path(tempfile.mkdtemp(prefix="dicomweb-metadata-")), {})
    elif args.url:
        url, key = args.url, args.key
    else:
        parser.error("give --url or --start")
    try:
        report = {"url": url, "clients": args.clients}
        for instances in (100, 1000):
            uid = store_study(url, key, instances)
            for encoding in ("identity", "gzip"):
                report[f"{instances} instances, {encoding}"] = measure(url, key, f"/studies/{uid}/metadata",
                                                                       encoding, args.clients, args.repeat)
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
