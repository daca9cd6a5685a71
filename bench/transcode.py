"""Transcoding benchmark: instances/s per target syntax, ours against GDCM's own gdcmconv.

    python -m bench.transcode [--repeat N] [--out bench/results/transcode.json]
    python -m bench.transcode --http [--clients 4]   # through gunicorn: instances/s per target
    python -m bench.transcode --codecs               # one frame: encode/decode ms and ratio per codec

Two images with the structure of real ones (testbed.synthetic.phantom): a 512×512 CT
slice and a 2048×2048 radiograph, 16-bit allocated, 12 stored. For each target,
``transcode()`` (what a WADO-RS retrieve runs, minus HTTP) is timed in this process,
and ``gdcmconv`` (apt-get install libgdcm-tools) converting the same file to the
same syntax; gdcmconv's time includes its process start, measured apart by a
conversion that changes nothing (explicit to explicit). Decoding back to
Explicit VR Little Endian is timed from each compressed output.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance, phantom
from transcode import transcode

ELE = "1.2.840.10008.1.2.1"
# Target: gdcmconv options for the same syntax and the same lossy settings as ours (None: gdcmconv has none).
TARGETS = {
    "1.2.840.10008.1.2": ["--implicit"],
    "1.2.840.10008.1.2.1.99": ["--deflated"],
    "1.2.840.10008.1.2.2": None,
    "1.2.840.10008.1.2.4.51": ["--jpeg", "--lossy", "--quality", "90"],
    "1.2.840.10008.1.2.4.57": None,
    "1.2.840.10008.1.2.4.70": ["--jpeg"],
    "1.2.840.10008.1.2.4.80": ["--jpegls"],
    "1.2.840.10008.1.2.4.81": ["--jpegls", "--lossy", "--allowed-error", "2"],
    "1.2.840.10008.1.2.4.90": ["--j2k"],
    "1.2.840.10008.1.2.4.91": ["--j2k", "--lossy", "--rate", "10"],
    "1.2.840.10008.1.2.5": ["--rle"],
    "1.2.840.10008.1.2.4.201": None, "1.2.840.10008.1.2.4.202": None, "1.2.840.10008.1.2.4.203": None,
    "1.2.840.10008.1.2.4.110": None, "1.2.840.10008.1.2.4.112": None,
}
# The lossless frame codecs compared by --codecs, and the lossy ones beside them.
FRAME_CODECS = {"1.2.840.10008.1.2.4.201": "HTJ2K", "1.2.840.10008.1.2.4.202": "HTJ2K RPCL",
                "1.2.840.10008.1.2.4.90": "JPEG 2000", "1.2.840.10008.1.2.4.80": "JPEG-LS",
                "1.2.840.10008.1.2.4.110": "JPEG XL", "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
                "1.2.840.10008.1.2.5": "RLE", "1.2.840.10008.1.2.4.203": "HTJ2K lossy",
                "1.2.840.10008.1.2.4.91": "JPEG 2000 lossy", "1.2.840.10008.1.2.4.112": "JPEG XL lossy"}


def median_time(function, repeat: int) -> float:
    """Median seconds of ``repeat`` runs, after one to warm up."""
    function()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def _gdcmconv(source: Path, out: Path, options: list[str]):
    def run():
        subprocess.run(["gdcmconv", *options, "-i", str(source), "-o", str(out)], check=True,
                       capture_output=True)
    return run


def bench_image(name: str, data: bytes, repeat: int, work: Path) -> dict:
    source = work / f"{name}.dcm"
    source.write_bytes(data)
    gdcm = shutil.which("gdcmconv")
    startup = median_time(_gdcmconv(source, work / "same.dcm", ["--explicit"]), repeat) if gdcm else None
    rows = []
    for target, options in TARGETS.items():
        encoded = transcode(io.BytesIO(data), target, ELE)
        ours = median_time(lambda: transcode(io.BytesIO(data), target, ELE), repeat)
        row = {"target": target, "ours_s": ours, "ours_per_s": 1 / ours, "bytes": len(encoded),
               "ratio": len(data) / len(encoded)}
        if gdcm and options:
            try:
                theirs = median_time(_gdcmconv(source, work / "out.dcm", options), repeat)
            except subprocess.CalledProcessError as exc:
                row["gdcmconv_failed"] = f"exit {exc.returncode}"
                theirs = None
        if gdcm and options and theirs is not None:
            row.update(gdcmconv_s=theirs, gdcmconv_minus_start_s=max(theirs - startup, 1e-6),
                       ours_vs_gdcmconv=ours / theirs, ours_vs_gdcmconv_work=ours / max(theirs - startup, 1e-6))
        if target not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"):
            row["decode_s"] = median_time(lambda: transcode(io.BytesIO(encoded), ELE, target), repeat)
            if gdcm:
                (work / "enc.dcm").write_bytes(encoded)
                row["gdcmconv_decode_s"] = median_time(_gdcmconv(work / "enc.dcm", work / "dec.dcm", ["--raw"]), repeat)
        rows.append(row)
        print(f"{name:10} {target:24} ours {ours * 1000:8.1f} ms"
              + (f"  gdcmconv {row['gdcmconv_s'] * 1000:8.1f} ms (start {startup * 1000:.1f})"
                 f"  ratio {row['ours_vs_gdcmconv']:.2f}" if "gdcmconv_s" in row else "")
              + (f"  decode {row['decode_s'] * 1000:.1f} ms" if "decode_s" in row else "")
              + (f" / gdcmconv {row['gdcmconv_decode_s'] * 1000:.1f}" if "gdcmconv_decode_s" in row else ""),
              flush=True)
    return {"image": name, "size": len(data), "gdcmconv_start_s": startup, "targets": rows}


def bench_codecs(repeat: int) -> list[dict]:
    """One frame through each codec as the server runs it (transcode.codecs.encode_frame and
    decode_frame): ms to encode, ms to decode, compression ratio, and whether lossless ones
    came back exact."""
    import numpy as np

    from transcode.codecs import PixelDescription, decode_frame, encode_frame

    rows = []
    for name, size in (("ct-512", 512), ("dx-2048", 2048)):
        pixels = phantom(size, size)
        native = pixels.tobytes()
        description = PixelDescription(size, size, 1, 16, 12, 0, "MONOCHROME2")
        for target, codec in FRAME_CODECS.items():
            encoded, _ = encode_frame(native, description, target)
            decoded, _ = decode_frame(encoded, description, target)
            row = {"image": name, "target": target, "codec": codec, "ratio": len(native) / len(encoded),
                   "encode_ms": 1000 * median_time(lambda: encode_frame(native, description, target), repeat),
                   "decode_ms": 1000 * median_time(lambda: decode_frame(encoded, description, target), repeat),
                   "exact": decoded == native,
                   "mean_error": float(np.abs(np.frombuffer(decoded, "<u2").astype(float) - pixels.ravel()).mean())}
            rows.append(row)
            outcome = "exact" if row["exact"] else f"mean error {row['mean_error']:.2f}"
            print(f"{name:8} {codec:18} ratio {row['ratio']:6.2f}  encode {row['encode_ms']:7.1f} ms  "
                  f"decode {row['decode_ms']:7.1f} ms  {outcome}", flush=True)
    return rows


def bench_http(data: bytes, clients: int, repeat: int) -> list[dict]:
    """Instances/s retrieving one CT slice in each target syntax from our server under gunicorn
    (its default configuration: 2 workers a core, 4 threads, 2 conversion slots a worker)."""
    import requests

    from bench.run import instance_resource, retrieve, start_server
    from testbed.messages import multipart_body, stow_headers

    with tempfile.TemporaryDirectory() as work:
        server, url, key, _ = start_server(Path(work), {})
        try:
            requests.post(url + "/studies", data=multipart_body([data]), timeout=60,
                          headers={"Authorization": f"Bearer {key}", **stow_headers()}).raise_for_status()
            path = Path(work) / "ct.dcm"
            path.write_bytes(data)
            resource = instance_resource(path)
            rows = []
            for target in [ELE, *TARGETS]:
                figures = retrieve(url, key, resource, f"application/dicom; transfer-syntax={target}", clients, repeat)
                rows.append({"target": target, **figures})
                print(f"http {target:24} {figures['requests_per_s']:8.1f} instances/s", flush=True)
            return rows
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default="bench/results/transcode.json")
    parser.add_argument("--http", action="store_true", help="measure through our server instead")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--codecs", action="store_true", help="one frame through each codec instead")
    args = parser.parse_args()
    if args.codecs:
        rows = bench_codecs(args.repeat)
        Path(args.out.replace(".json", "-codecs.json")).write_text(json.dumps(rows, indent=2))
        return
    if args.http:
        ct = ct_instance(generate_uid(), generate_uid(), rows=512, columns=512, pixels=phantom(512, 512))
        rows = bench_http(ct, args.clients, max(args.repeat, 25))
        Path(args.out.replace(".json", "-http.json")).write_text(json.dumps(rows, indent=2))
        return
    images = {
        "ct-512": ct_instance(generate_uid(), generate_uid(), rows=512, columns=512, pixels=phantom(512, 512)),
        "dx-2048": ct_instance(generate_uid(), generate_uid(), rows=2048, columns=2048, pixels=phantom(2048, 2048),
                               Modality="DX"),
    }
    with tempfile.TemporaryDirectory() as work:
        results = [bench_image(name, data, args.repeat, Path(work)) for name, data in images.items()]
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
