"""Rendering of non-image objects: a 500-item structured report, a 200-frame cine, a video.

    python -m bench.reports_video [--repeat 7] [--video-mb 200] [--out bench/results/reports-video.json]

Our server under gunicorn (its defaults), on loopback, one client; each figure is the median
of ``--repeat`` requests after one to warm up:

- ``…/rendered`` of a TID 1500-shaped measurement report of 500 content items as text/html,
  text/plain and application/pdf (and the in-process time of reading and laying out the HTML);
- ``…/rendered`` with ``Accept: video/mp4`` of a 200-frame 640×480 8-bit ultrasound-like cine;
- ``…/rendered`` of an H.264 video instance of ``--video-mb`` MB stored as MP4 (a 1080p clip and
  a free box of random bytes): the whole stream with curl, against the instance retrieved as
  stored (WADO-RS, sendfile) and reading the blob's file with ``cat``; 1 MB ranges at random
  offsets.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pydicom
import requests
from pydicom.uid import generate_uid

from bench.run import start_server
from bench.transcode import median_time
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance, measurement_report, video_instance, video_stream


def _store(url: str, key: str, data: bytes) -> str:
    r = requests.post(url + "/studies", data=multipart_body([data]), timeout=600,
                      headers={"Authorization": f"Bearer {key}", **stow_headers()})
    r.raise_for_status()
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _get(session: requests.Session, url: str, key: str, **headers: str) -> requests.Response:
    r = session.get(url, headers={"Authorization": f"Bearer {key}", **headers}, timeout=600)
    r.raise_for_status()
    return r


def cine(frames: int = 200, rows: int = 480, columns: int = 640) -> bytes:
    """An ultrasound-like cine: a speckled fan that moves, 8-bit grey, 30 frames a second."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:rows, 0:columns]
    angle = np.arctan2(x - columns / 2, y + 40)
    fan = (np.abs(angle) < 0.7) & (np.hypot(x - columns / 2, y + 40) < rows * 1.05)
    pixels = np.empty((frames, rows, columns), np.uint8)
    for n in range(frames):
        speckle = rng.gamma(2.0, 40.0, (rows, columns))
        wave = 60 * (1 + np.sin(y / 25 - n / 5))
        pixels[n] = np.clip((speckle + wave) * fan, 0, 255)
    return ct_instance(generate_uid(), generate_uid(), rows=rows, columns=columns, frames=frames,
                       pixels=pixels.astype(np.uint16), Modality="US", SOPClassUID="1.2.840.10008.5.1.4.1.1.3.1",
                       FrameTime=1000 / 30, WindowCenter=128, WindowWidth=256, RescaleIntercept=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--video-mb", type=int, default=200)
    parser.add_argument("--out", default="bench/results/reports-video.json")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as work:
        server, url, key, _ = start_server(Path(work), {})
        session = requests.Session()
        try:
            study, series = generate_uid(), generate_uid()
            images = []
            for number in range(1, 4):
                data = ct_instance(study, series, number=number, rows=64, columns=64)
                images.append((series, pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID))
                _store(url, key, data)
            report = measurement_report(study, images, measurements=100)   # 4 + 5 × 100 content items
            report_url = _store(url, key, report)
            model = pydicom.dcmread(io.BytesIO(report)).to_json_dict()
            from transcode.report import as_html, read_report
            items = len(read_report(model, lambda *a: None).items)
            encoded = orjson.dumps(model)
            results["report_items"] = items
            results["report_in_process_ms"] = 1000 * median_time(
                lambda: as_html(read_report(orjson.loads(encoded), lambda *a: "/x")), args.repeat)
            for media_type in ("text/html", "text/plain", "application/pdf"):
                results[f"report_{media_type}_ms"] = 1000 * median_time(
                    lambda: _get(session, report_url + "/rendered", key, Accept=media_type), args.repeat)
            print(f"SR of {items} items: in process {results['report_in_process_ms']:.1f} ms; over HTTP "
                  + ", ".join(f"{t} {results[f'report_{t}_ms']:.1f} ms" for t in ("text/html", "text/plain",
                                                                                   "application/pdf")), flush=True)

            cine_url = _store(url, key, cine())
            mp4 = _get(session, cine_url + "/rendered", key, Accept="video/mp4").content
            results["cine_frames"], results["cine_mp4_bytes"] = 200, len(mp4)
            results["cine_mp4_s"] = median_time(lambda: _get(session, cine_url + "/rendered", key, Accept="video/mp4"),
                                            max(3, args.repeat // 2))
            results["cine_gif_s"] = median_time(lambda: _get(session, cine_url + "/rendered", key, Accept="image/gif"),
                                            max(3, args.repeat // 2))
            print(f"200-frame 640x480 cine: MP4 {results['cine_mp4_s']:.2f} s ({len(mp4) >> 10} KiB), "
                  f"animated GIF {results['cine_gif_s']:.2f} s", flush=True)

            # A video of the size asked: a real 1080p H.264 MP4 (faststart) followed by a free box
            # of random bytes, which MP4 readers skip: as many bytes to send as a long video, made in
            # a second instead of encoding minutes of video.
            stream = video_stream("h264-mp4", seconds=2, width=1920, height=1080, rate=30)
            padding = (args.video_mb << 20) - len(stream)
            if padding > 8:
                stream += (padding + 8).to_bytes(4, "big") + b"free" + random.randbytes(padding)
            video_url = _store(url, key, video_instance(generate_uid(), generate_uid(), "h264-mp4",
                                                        stream=stream, width=1920, height=1080, rate=30,
                                                        seconds=2))
            size = len(stream)

            def curl(address: str, accept: str = "*/*") -> None:   # a client that is not the bottleneck
                subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {key}",
                                "-H", f"Accept: {accept}", address], check=True, timeout=600)
            whole = median_time(lambda: curl(video_url + "/rendered"), max(3, args.repeat // 2))
            instance = median_time(lambda: curl(video_url, 'multipart/related; type="application/dicom"; '
                                                       'transfer-syntax=*'), max(3, args.repeat // 2))
            blobs = sorted((Path(work) / "var").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
            blob = blobs[-1]
            cat = median_time(lambda: subprocess.run(["cat", str(blob)], stdout=subprocess.DEVNULL, check=True),
                          max(3, args.repeat // 2))
            rng = random.Random(0)
            ranges = []
            for _ in range(20):
                start = rng.randrange(0, size - (1 << 20))
                began = time.perf_counter()
                part = _get(session, video_url + "/rendered", key, Range=f"bytes={start}-{start + (1 << 20) - 1}")
                ranges.append(time.perf_counter() - began)
                assert part.status_code == 206 and part.content == stream[start:start + (1 << 20)]
            results.update(video_bytes=size, video_whole_s=whole, video_whole_mb_s=size / whole / 1e6,
                           instance_retrieve_mb_s=size / instance / 1e6,
                           blob_cat_s=cat, blob_cat_mb_s=blob.stat().st_size / cat / 1e6,
                           video_range_1mb_median_ms=1000 * statistics.median(ranges),
                           video_range_1mb_p95_ms=1000 * sorted(ranges)[int(0.95 * len(ranges)) - 1])
            print(f"video of {size / 1e6:.0f} MB: whole {results['video_whole_mb_s']:.0f} MB/s with curl "
                  f"(the instance retrieved as stored {results['instance_retrieve_mb_s']:.0f} MB/s, cat of its blob "
                  f"{results['blob_cat_mb_s']:.0f} MB/s); 1 MB ranges median "
                  f"{results['video_range_1mb_median_ms']:.1f} ms, p95 {results['video_range_1mb_p95_ms']:.1f} ms",
                  flush=True)
        finally:
            server.stop()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
