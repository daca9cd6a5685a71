"""WADO-RS frame benchmark: random frames of a 1,000-frame 512×512 instance, and frames/1 of CT slices.

    python -m bench.frames --start            # our server on disk blobs + SQLite
    python -m bench.frames --start --s3       # our server on S3 (moto server over HTTP, on loopback)
    python -m bench.frames --url URL [--key]  # any DICOMweb server
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests
from pydicom.uid import generate_uid

from bench.run import latency, run_clients
from testbed.synthetic import ct_instance

ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _store(url: str, key: str | None, path: Path) -> None:
    """STOW one file as a one-part multipart body (what every server accepts), streamed from disk."""
    boundary = "bench-frames"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def body():
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = requests.post(url.rstrip("/") + "/studies", data=body(), headers=headers, timeout=1800)
    r.raise_for_status()


def _client(url: str, key: str | None, paths: list[str], results) -> None:  # noqa: ANN001
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"Accept": ACCEPT, **({"Authorization": f"Bearer {key}"} if key else {})}
    timings = []
    started = time.perf_counter()
    for path in paths:
        start = time.perf_counter()
        conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
        response = conn.getresponse()
        response.read()
        timings.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}")
    results.put((timings, time.perf_counter() - started))


def measure(url: str, key: str | None, per_client: list[list[str]]) -> dict:
    gathered = run_clients(_client, [(url, key, paths) for paths in per_client])
    samples = [t for timings, _ in gathered for t in timings]
    wall = max(w for _, w in gathered)
    return {"requests": len(samples), **latency(samples, 2), "frames_per_s": round(len(samples) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--start", action="store_true")
    parser.add_argument("--s3", action="store_true", help="with --start: blobs on a moto S3 server")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per client and measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dicomweb-frames-"))
    server = moto = None
    if args.start:
        from bench.run import start_server

        env = {}
        if args.s3:
            import os

            import boto3
            from moto.server import ThreadedMotoServer

            from testbed.server import free_port

            port = free_port()
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            endpoint = f"http://127.0.0.1:{port}"
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ.setdefault(name, "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="frames")
            env = {"DICOMWEB_STORAGE": "s3://frames/bench", "DICOMWEB_S3_ENDPOINT_URL": endpoint,
                   **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}}
        server, url, key, _ = start_server(workdir, env)
    elif args.url:
        url, key = args.url, args.key
    else:
        parser.error("give --url or --start")
    try:
        study, series = generate_uid(), generate_uid()
        big_uid = generate_uid()
        big = workdir / "multiframe.dcm"
        big.write_bytes(ct_instance(study, series, big_uid, rows=512, columns=512, frames=args.frames))
        started = time.perf_counter()
        _store(url, key, big)
        report: dict = {"url": url, "instance_bytes": big.stat().st_size,
                        "store_seconds": round(time.perf_counter() - started, 1)}
        big.unlink()
        rng = random.Random(5)
        base = f"/studies/{study}/series/{series}/instances/{big_uid}/frames/"
        report["random frame of the multi-frame instance"] = measure(
            url, key, [[base + str(rng.randint(1, args.frames)) for _ in range(args.requests)]
                       for _ in range(args.clients)])
        slices = []
        for n in range(100):
            uid = generate_uid()
            path = workdir / f"slice{n}.dcm"
            path.write_bytes(ct_instance(study, series, uid, number=n + 2, rows=512, columns=512))
            _store(url, key, path)
            slices.append(f"/studies/{study}/series/{series}/instances/{uid}/frames/1")
        report["frames/1 of single-frame CT slices"] = measure(
            url, key, [[rng.choice(slices) for _ in range(args.requests)] for _ in range(args.clients)])
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    main()
