"""Ingest rate of STOW-RS with JSON metadata and JPEG bulk data parts (issue 8).

    python -m bench.stow_metadata [--clients 4] [--requests 40]

Starts our server under gunicorn (disk + SQLite, fsync on) and has each client send
``--requests`` requests of 10 instances each: one application/dicom+json part (10 Secondary
Capture data sets without pixel description) and 10 image/jpeg parts (640×480 colour photos,
about 60 KB each). Reports instances/s.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from bench.run import post_stows, run_clients, start_server

BOUNDARY = "bench-meta"


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    base = ((np.sin(x / 37) + np.cos(y / 23)) * 60 + 128 + rng.normal(0, 4, (480, 640))).clip(0, 255)
    out = io.BytesIO()
    Image.fromarray(np.stack([base, base[::-1], base[:, ::-1]], -1).astype(np.uint8), "RGB").save(out, "JPEG",
                                                                                                 quality=90)
    return out.getvalue()


def _request(photos: list[bytes]) -> bytes:
    study = generate_uid()
    models = [{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
               "0020000D": {"vr": "UI", "Value": [study]},
               "00100020": {"vr": "LO", "Value": ["BENCH"]},
               "7FE00010": {"vr": "OB", "BulkDataURI": f"photo{n}"}} for n in range(len(photos))]
    chunks = [f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n".encode() + json.dumps(models).encode()
              + b"\r\n"]
    for n, data in enumerate(photos):
        chunks.append(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Location: photo{n}\r\n\r\n".encode()
                      + data + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def _client(url: str, key: str, requests: int, seed: int, results) -> None:  # noqa: ANN001
    photos = [_photo(seed * 100 + n) for n in range(10)]
    bodies = [_request(photos) for _ in range(requests)]
    stored, seconds = post_stows(url, key, bodies,
                                 f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}')
    results.put((stored, seconds, sum(len(p) for p in photos) / len(photos)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", default="bench/results/stow-metadata.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server, url, key, _ = start_server(Path(work), {})
        try:
            results = run_clients(_client, [(url, key, args.requests, c) for c in range(args.clients)])
        finally:
            server.stop()
    stored, seconds = sum(r[0] for r in results), max(r[1] for r in results)
    report = {"clients": args.clients, "instances": stored, "seconds": round(seconds, 2),
              "instances_per_s": round(stored / seconds, 1), "jpeg_bytes": round(results[0][2])}
    print(report)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
