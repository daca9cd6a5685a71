"""Ours against Orthanc on what issue 19 adds: reports, videos, cines and the new codecs.

    python -m bench.compare_rendering [--rounds 5] [--requests 10]

Debian's Orthanc with its DICOMweb plugin (bench.compare installs and starts it) and our server
under gunicorn, on free loopback ports, are given the same objects through STOW-RS: a 500-item
measurement report, a 50 MB H.264 video instance, a 200-frame 640×480 cine, a 512² CT slice in
JPEG 2000 and the same slice in HTJ2K. Each workload runs ``--requests`` requests on each
server in turn, the order alternating by round; the table gives each server's median ms, or the
status it answered when it does not do the thing, and the median of the per-round ratios.
Writes bench/results/compare-rendering.json and prints the table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from bench.compare import _headers, ensure_installed, start_orthanc, start_ours
from bench.reports_video import cine
from bench.run import connect
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance, measurement_report, phantom, video_instance, video_stream
from transcode import transcode


def store(target, data: bytes) -> str:
    conn = connect(target.base)[0]
    conn.request("POST", target.prefix + "/studies", body=multipart_body([data]),
                 headers=_headers(target, **stow_headers()))
    response = conn.getresponse()
    response.read()
    if response.status not in (200, 202):
        raise RuntimeError(f"{target.name} refused a STOW: {response.status}")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"{target.prefix}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def timed(target, path: str, headers: dict, count: int) -> tuple[int, float]:
    """(status, median seconds) of ``count`` GETs on one connection."""
    conn = connect(target.base)[0]
    runs, status = [], 0
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path, headers=_headers(target, **headers))
        response = conn.getresponse()
        response.read()
        runs.append(time.perf_counter() - start)
        status = response.status
        if status >= 400:
            break
    return status, statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--out", default="bench/results/compare-rendering.json")
    args = parser.parse_args()
    ensure_installed()
    study, series = generate_uid(), generate_uid()
    images = [(series, generate_uid()) for _ in range(3)]
    objects = {f"image{n}": ct_instance(study, series, sop_uid=uid, number=n, rows=64, columns=64)
               for n, (_, uid) in enumerate(images, 1)}
    objects["report"] = measurement_report(study, images, measurements=100)
    stream = video_stream("h264-mp4", seconds=2, width=1280, height=720, rate=30)
    padding = (50 << 20) - len(stream)
    stream += (padding + 8).to_bytes(4, "big") + b"free" + random.Random(0).randbytes(padding)
    objects["video"] = video_instance(generate_uid(), generate_uid(), "h264-mp4", stream=stream, width=1280,
                                      height=720, seconds=2, rate=30)
    objects["cine"] = cine()
    ct = ct_instance(generate_uid(), generate_uid(), rows=512, columns=512, pixels=phantom(512, 512))
    objects["j2k"] = transcode(io.BytesIO(ct), "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1")
    objects["htj2k"] = transcode(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=512, columns=512,
                                                        pixels=phantom(512, 512))),
                                 "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.1")
    workloads = [
        ("SR as HTML (…/rendered)", "report", "/rendered", {"Accept": "text/html"}),
        ("SR as PDF (…/rendered)", "report", "/rendered", {"Accept": "application/pdf"}),
        ("video, whole (…/rendered)", "video", "/rendered", {"Accept": "video/mp4"}),
        ("video, a 1 MB range", "video", "/rendered", {"Accept": "video/mp4", "Range": "bytes=1000000-2048575"}),
        ("video thumbnail", "video", "/thumbnail", {"Accept": "image/jpeg"}),
        ("video frame 30 as JPEG", "video", "/frames/30/rendered", {"Accept": "image/jpeg"}),
        ("cine of 200 frames as MP4", "cine", "/rendered", {"Accept": "video/mp4"}),
        ("JPEG 2000 frame as HTJ2K", "j2k", "/frames/1", {"Accept": "multipart/related; type=image/jphc"}),
        ("HTJ2K frame decoded", "htj2k", "/frames/1", {"Accept": "multipart/related; type=application/octet-stream"}),
        ("HTJ2K frame rendered", "htj2k", "/frames/1/rendered", {"Accept": "image/jpeg"}),
    ]
    results: dict = {}
    with tempfile.TemporaryDirectory() as work:
        targets = [start_ours(Path(work)), start_orthanc(Path(work))]
        try:
            paths = {t.name: {name: store(t, data) for name, data in objects.items()} for t in targets}
            for label, name, suffix, headers in workloads:
                rows = {t.name: [] for t in targets}
                statuses = {}
                for round_number in range(args.rounds):
                    order = targets if round_number % 2 == 0 else targets[::-1]
                    for target in order:
                        status, seconds = timed(target, paths[target.name][name] + suffix, headers, args.requests)
                        statuses[target.name] = status
                        if status < 400:
                            rows[target.name].append(seconds)
                entry = {}
                for target in targets:
                    times = rows[target.name]
                    entry[target.name] = {"status": statuses[target.name],
                                          "median_ms": 1000 * statistics.median(times) if times else None}
                if all(rows[t.name] for t in targets) and len(rows["ours"]) == len(rows["orthanc"]):
                    entry["ratio"] = statistics.median(o / t for o, t in zip(rows["ours"], rows["orthanc"]))
                results[label] = entry
                print(label, json.dumps(entry), flush=True)
        finally:
            for target in targets:
                target.stop()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("\n| workload | ours | Orthanc | ours / Orthanc |\n|---|---|---|---|")
    for label, entry in results.items():
        cell = (lambda e: f"{e['median_ms']:.1f} ms" if e["median_ms"] is not None else f"answers {e['status']}")
        ratio = f"{entry['ratio']:.2f}" if "ratio" in entry else "—"
        print(f"| {label} | {cell(entry['ours'])} | {cell(entry['orthanc'])} | {ratio} |")


if __name__ == "__main__":
    main()
