"""What hostile requests cost a worker: each of the requests issues 13 and 29 found a worker could
be made to spend memory or time on, sent to a real gunicorn with one worker (so that it is the one
measured), with the worker's peak resident memory reset before each and read after.

    python -m bench.hostile

prints, per request, the answer's status, its seconds, and how far it raised the worker's peak
resident memory above where it stood before (MB). The budget (docs/security.md): no request
moves a worker's memory by more than 64 MB, and each answers within its bound (issue 29's within
2 s). Then the Worklist's fan-out: what two workitems of 900 kB, their progress reported to 50
subscribed AE titles that never connect, add to the catalog.
"""
from __future__ import annotations

import io
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pydicom
import requests
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance, many_items_report, measurement_report
from testbed.server import free_port
from testbed.messages import multipart_body, stow_headers
from testbed.server import Server

KEY = "bench-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _worker(master: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return int(children[0])


def _status_mb(pid: int, field: str) -> float:
    """A size of /proc/PID/status (VmRSS: resident now, VmHWM: its peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")   # the peak resident size starts again from now


def _deflated(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _many_frames(study: str, count: int) -> bytes:
    """An encapsulated instance of ``count`` one-fragment frames with a Basic Offset Table."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(ct_instance(study, generate_uid(), rows=8, columns=8, BitsStored=8)))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.NumberOfFrames = count
    ds.PixelData = encapsulate([b"\x00\x00" * 20] * count, has_bot=True)
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _metadata_body(parts: list[tuple[dict, bytes]]) -> bytes:
    chunks = [f"--m\r\n{''.join(f'{k}: {v}' + chr(13) + chr(10) for k, v in h.items())}\r\n".encode() + d + b"\r\n"
              for h, d in parts]
    return b"".join(chunks) + b"--m--\r\n"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    server = Server({"DICOMWEB_DATA_DIR": str(work / "var"), "DICOMWEB_API_KEY": KEY,
                     "GUNICORN_CMD_ARGS": "--workers=1 --threads=4"}, free_port(), work / "gunicorn.log")
    base = server.dicomweb
    try:
        worker = _worker(server.process.pid)
        study, series = generate_uid(), generate_uid()
        small, huge, frames, cine, report, report_series = (generate_uid() for _ in range(6))
        setup = [ct_instance(study, series, small, rows=64, columns=64),
                 _deflated(ct_instance(study, series, huge, rows=6144, columns=6144,
                                       pixels=np.tile(np.arange(6144, dtype=np.uint16) % 4096, (1, 6144, 1)))),
                 ct_instance(study, series, frames, rows=256, columns=256, frames=500),
                 ct_instance(study, series, cine, rows=8, columns=8, frames=50_000,
                             pixels=np.zeros((50_000, 8, 8), np.uint16), FrameTime=10.0)]
        for data in setup:
            requests.post(f"{base}/studies", data=multipart_body([data]), headers={**stow_headers(), **AUTH},
                          timeout=300).raise_for_status()
        instance = f"{base}/studies/{study}/series/{series}/instances"
        zeros = np.zeros((64, 2048, 2048), np.uint16)
        bomb = _deflated(ct_instance(study, generate_uid(), rows=2048, columns=2048, frames=64, pixels=zeros))
        sc = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
              "0020000D": {"vr": "UI", "Value": [study]}}
        referenced_often = {**sc, "00091010": {"vr": "LO", "Value": ["ACME"]},
                            **{f"0009{n:04X}": {"vr": "OB", "BulkDataURI": "blob0"} for n in range(16, 48)}}
        big_json = orjson.dumps([{**sc, **{f"0009{n:04X}": {"vr": "LO", "Value": ["x" * 40]} for n in range(16, 255)},
                                  "00091010": {"vr": "LO", "Value": ["ACME"]}}] * 300)[: (2 << 20) - 10]
        big_json = big_json[:big_json.rindex(b"},{") + 1] + b"]"
        nested = ('<?xml version="1.0"?><NativeDicomModel>' + '<DicomAttribute tag="00081115" vr="SQ"><Item '
                  'number="1">' * 1200 + "</Item></DicomAttribute>" * 1200 + "</NativeDicomModel>").encode()
        metadata = 'multipart/related; type="application/dicom+json"; boundary=m'
        cases = [
            ("STOW: deflate bomb, 0.5 MB inflating to 512 MiB", "POST", f"{base}/studies",
             {"data": multipart_body([bomb]), "headers": stow_headers()}),
            ("STOW: Basic Offset Table of 30,000 frames", "POST", f"{base}/studies",
             {"data": multipart_body([_many_frames(study, 30_000)]), "headers": stow_headers()}),
            ("STOW: 200,000 empty parts", "POST", f"{base}/studies",
             {"data": b"--b\r\n\r\n\r\n" * 200_000 + b"--b--\r\n",
              "headers": {"Content-Type": "multipart/related; boundary=b"}}),
            ("STOW metadata: 60 parts of 1 MiB, one named 32 times", "POST", f"{base}/studies",
             {"data": _metadata_body([({"Content-Type": "application/dicom+json"}, orjson.dumps([referenced_often])),
                                      *[({"Content-Type": "application/octet-stream", "Content-Location": f"blob{n}"},
                                         bytes([n]) * (1 << 20)) for n in range(60)]]),
              "headers": {"Content-Type": metadata}}),
            ("STOW metadata: a 2 MiB JSON part (the limit)", "POST", f"{base}/studies",
             {"data": _metadata_body([({"Content-Type": "application/dicom+json"}, big_json)]),
              "headers": {"Content-Type": metadata}}),
            ("STOW metadata: XML nested 1,200 levels", "POST", f"{base}/studies",
             {"data": _metadata_body([({"Content-Type": "application/dicom+xml"}, nested)]),
              "headers": {"Content-Type": metadata.replace("json", "xml")}}),
            ("thumbnail of a 6144² deflated instance", "GET", f"{instance}/{huge}/thumbnail", {}),
            ("rendered 6144² deflated instance, viewport 512", "GET", f"{instance}/{huge}/rendered?viewport=512,512", {}),
            ("frame of the 6144² deflated instance", "GET", f"{instance}/{huge}/frames/1", {}),
            ("rendered viewport beyond the image (179 Mpx asked)", "GET",
             f"{instance}/{small}/rendered?viewport=100,100,0,0,20000,9000", {}),
            ("WADO-URI rows=46000", "GET", f"{base}/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
             f"&objectUID={small}&rows=46000", {}),
            ("animated GIF of 500 frames of 256²", "GET", f"{instance}/{frames}/rendered",
             {"headers": {"Accept": "image/gif"}}),
            ("QIDO offset=1e9", "GET", f"{base}/studies?offset=1000000000", {}),
            ("QIDO 1,100 wildcard values", "GET", f"{base}/studies?PatientName=" + "%5C".join(f"a*{i}" for i in range(1100)),
             {}),
            ("Range of 4,400 digits", "GET", f"{instance}/{small}/bulk/7FE00010",
             {"headers": {"Accept": "application/octet-stream", "Range": "bytes=" + "9" * 4400 + "-"}}),
            # issue 29
            ("STOW: a structured report of 100,000 content items (6.8 MB)", "POST", f"{base}/studies",
             {"data": multipart_body([many_items_report(50_000)]), "headers": stow_headers()}),
            ("STOW: a TID 1500 report of 5,000 content items (stored: not a bound)", "POST", f"{base}/studies",
             {"data": multipart_body([measurement_report(study, [(series, small)], measurements=1_000,
                                                         sop_uid=report, SeriesInstanceUID=report_series)]),
              "headers": stow_headers()}),
            ("cine of 50,000 8x8 frames as MP4", "GET", f"{instance}/{cine}/rendered", {"headers": {"Accept": "video/mp4"}}),
            ("cine of 50,000 8x8 frames as GIF", "GET", f"{instance}/{cine}/rendered", {"headers": {"Accept": "image/gif"}}),
            ("Storage Commitment, the sequence a string", "POST", f"{base}/commitment-requests/1.2.3",
             {"data": b'{"00081199": "1.2.3"}', "headers": {"Content-Type": "application/dicom+json"}}),
            ("report as HTML, charset=idna", "GET", f"{base}/wado?requestType=WADO&studyUID={study}&seriesUID="
             f"{report_series}&objectUID={report}&charset=idna", {}),
        ]
        report = []
        for name, method, url, kwargs in cases:
            time.sleep(0.5)
            before = _status_mb(worker, "VmRSS")
            _reset_peak(worker)
            started = time.monotonic()
            headers = {**AUTH, **kwargs.get("headers", {})}
            r = requests.request(method, url, data=kwargs.get("data"), headers=headers, timeout=300)
            seconds = time.monotonic() - started
            report.append({"request": name, "status": r.status_code, "seconds": round(seconds, 2),
                           "peak_above_mb": round(_status_mb(worker, "VmHWM") - before, 1)})
            print(json.dumps(report[-1]), flush=True)
        assert _worker(server.process.pid) == worker, "the worker was replaced: one of the requests killed it"
        print(json.dumps({"worst_peak_above_mb": max(r["peak_above_mb"] for r in report),
                          "slowest_seconds": max(r["seconds"] for r in report)}))
    finally:
        server.stop()
    fan_out(work)


def fan_out(work: Path) -> None:
    """Two workitems of 900 kB whose progress (the 900 kB Progress Information Sequence) is
    reported to 50 subscribed AE titles that never connect, each updated ten times: the
    catalog's growth, and the events that wait."""
    import sqlite3

    data = work / "fanout"
    server = Server({"DICOMWEB_DATA_DIR": str(data), "DICOMWEB_API_KEY": KEY, "DICOMWEB_API_KEY_PERMISSIONS":
                     "read,store,worklist", "GUNICORN_CMD_ARGS": "--workers=1 --threads=4"}, free_port(),
                    work / "fanout.log")
    json_type = {**AUTH, "Content-Type": "application/dicom+json"}
    base = server.dicomweb

    def catalog_bytes() -> int:
        return sum(p.stat().st_size for p in data.glob("catalog.sqlite*"))

    try:
        for title in range(50):
            requests.post(f"{base}/workitems/1.2.840.10008.5.1.4.34.5/subscribers/SLOW{title}", headers=AUTH,
                          timeout=30).raise_for_status()
        padding = [{"0040A160": {"vr": "UT", "Value": ["x" * 1000]}} for _ in range(900)]
        before, started = catalog_bytes(), time.monotonic()
        for n in (1, 2):
            workitem = {"00741000": {"vr": "CS", "Value": ["SCHEDULED"]}, "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
                        "00741204": {"vr": "LO", "Value": ["fan-out"]}, "00404041": {"vr": "CS", "Value": ["READY"]},
                        "00404005": {"vr": "DT", "Value": ["20261207120000"]},
                        "00400400": {"vr": "LT", "Value": ["y" * 900_000]}}   # Comments on the step: 900 kB
            requests.post(f"{base}/workitems?1.2.9.{n}", data=orjson.dumps(workitem), headers=json_type,
                          timeout=60).raise_for_status()
            requests.put(f"{base}/workitems/1.2.9.{n}/state", headers=json_type, timeout=60, data=orjson.dumps(
                {"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}, "00081195": {"vr": "UI", "Value": ["1.2.99"]}}
            )).raise_for_status()
            for step in range(10):
                progress = {"00741002": {"vr": "SQ", "Value": [{"00741004": {"vr": "DS", "Value": [step * 10]},
                                                                "00741007": {"vr": "SQ", "Value": padding}}]}}
                requests.post(f"{base}/workitems/1.2.9.{n}?transaction=1.2.99", data=orjson.dumps(progress),
                              headers=json_type, timeout=60).raise_for_status()
        seconds = time.monotonic() - started
        with sqlite3.connect(data / "catalog.sqlite") as db:
            events, largest = db.execute("SELECT count(*), max(length(information)) FROM worklist_events").fetchone()
        print(json.dumps({"request": "Worklist fan-out: 2 workitems of 900 kB, 10 progress reports each, 50 titles",
                          "seconds": round(seconds, 2), "catalog_growth_mb": round((catalog_bytes() - before) / 2**20, 1),
                          "events_waiting": events, "largest_event_bytes": largest}), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
