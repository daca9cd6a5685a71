"""Rendered, thumbnail and WADO-URI benchmark (issue 6).

    python -m bench.rendered [--clients 4] [--series 300]

Starts our server under gunicorn (disk + SQLite in a temporary directory), stores one
512×512 CT slice (testbed.synthetic.phantom) and a series of ``--series`` slices, then
measures with ``--clients`` client processes on persistent connections: /rendered as
image/jpeg, WADO-URI image/jpeg and application/dicom, and the series thumbnail (first
request, made and cached; then the cached one).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests
from pydicom.uid import generate_uid

from bench.run import latency, retrieve, start_server
from testbed.synthetic import ct_instance, phantom
from testbed.messages import multipart_body, read, stow_headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=100, help="requests per client")
    parser.add_argument("--series", type=int, default=300, help="instances in the thumbnail series")
    parser.add_argument("--url", help="DICOMweb base URL of a running server (then the report is JSON on stdout)")
    parser.add_argument("--key", help="its API key (Authorization: Bearer)")
    parser.add_argument("--out", default="bench/results/rendered.json")
    args = parser.parse_args()
    if args.url:
        print(json.dumps(measure(args.url, args.key, args), indent=2))
        return
    with tempfile.TemporaryDirectory() as work:
        server, url, key, _ = start_server(Path(work), {})
        try:
            results = measure(url, key, args)
        finally:
            server.stop()
    for name, figures in results.items():
        print(f"{name:22} {figures}")
    Path(args.out).write_text(json.dumps(results, indent=2))


def measure(url: str, key: str, args: argparse.Namespace) -> dict:
    auth = {"Authorization": f"Bearer {key}"}
    study, series = generate_uid(), generate_uid()
    slice_ = ct_instance(study, series, rows=512, columns=512, pixels=phantom(512, 512))
    requests.post(url + "/studies", data=multipart_body([slice_]), headers={**auth, **stow_headers()},
                  timeout=60).raise_for_status()
    ds = read(slice_)
    instance = f"/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"
    wado = f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={ds.SOPInstanceUID}"
    results = {
        "rendered_jpeg": retrieve(url, key, instance + "/rendered", "image/jpeg", args.clients, args.repeat),
        "wado_uri_jpeg": retrieve(url, key, wado, "*/*", args.clients, args.repeat),
        "wado_uri_dicom": retrieve(url, key, wado + "&contentType=application/dicom", "*/*",
                                   args.clients, args.repeat * 5),
    }
    big_series = generate_uid()
    for start in range(0, args.series, 50):
        batch = [ct_instance(study, big_series, number=n + 1, rows=512, columns=512,
                             pixels=phantom(512, 512, seed=n)) for n in range(start, min(start + 50, args.series))]
        requests.post(url + "/studies", data=multipart_body(batch), headers={**auth, **stow_headers()},
                      timeout=300).raise_for_status()
    thumbnail = f"{url}/studies/{study}/series/{big_series}/thumbnail"
    session = requests.Session()
    first = time.perf_counter()
    session.get(thumbnail, headers=auth, timeout=60).raise_for_status()
    cold = time.perf_counter() - first
    warm = []
    for _ in range(100):
        start = time.perf_counter()
        session.get(thumbnail, headers=auth, timeout=60).raise_for_status()
        warm.append(time.perf_counter() - start)
    results["thumbnail"] = {"series_instances": args.series, "first_ms": round(cold * 1000, 1), "cached": latency(warm)}
    results["thumbnail_cached_rate"] = retrieve(url, key, f"/studies/{study}/series/{big_series}/thumbnail",
                                                "image/jpeg", args.clients, args.repeat)
    return results


if __name__ == "__main__":
    main()
