"""The viewer as people meet it: the same OHIF build in Debian's chromium, in front of ours and
in front of Orthanc, each through nginx on loopback, opening the same 300-slice 512² CT study.

    python -m bench.viewer [--rounds 5] [--slices 300]

Ours: nginx proxies everything to gunicorn, which serves the viewer (signed in with a person's
key) and DICOMweb. Orthanc: nginx serves the viewer's files itself (gzip_static) and proxies
/dicom-web to Orthanc's DICOMweb plugin. The viewer's files are in the browser's cache before the
rounds (each round a new page: OHIF's image cache is empty). Measured from navigation: the first
image drawn in the viewport (the canvas no longer blank) and the last of the study's frames
received (OHIF fetches every slice of the displayed stack). Rounds alternate between the two.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.compare import ensure_installed, load, make_series, start_orthanc
from service.viewer.app_config import app_config
from service.viewer.build import install
from testbed.server import ROOT, Server, free_port, stop_process

VERSION = "3.13.2"
PERSON_KEY = "bench-viewer-person-key"
SYSTEM_KEY = "bench-viewer-system-key"
FIRST_IMAGE = ("() => { const c = document.querySelector('[data-cy=viewport-pane] canvas.cornerstone-canvas');"
               " if (!c || !c.width) return false;"
               " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
               " for (let i = 0; i < d.length; i += 4 * 97) if (d[i]) return true; return false; }")


def _nginx(work: Path, name: str, server_block: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    folder = work / f"nginx-{name}"
    folder.mkdir()
    user = "user root;" if os.geteuid() == 0 else ""
    temp = "".join(f"{kind}_temp_path {folder};\n    " for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(f"""{user}
worker_processes 1;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'};
events {{ worker_connections 512; }}
http {{
    access_log off;
    sendfile on;
    {temp}
    upstream backend {{ {server_block.split('|', 1)[0]} keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_buffering on;
        proxy_buffers 16 256k;
        proxy_max_temp_file_size 0;
        {server_block.split('|', 1)[1]}
    }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return f"http://127.0.0.1:{port}", process


def _orthanc_site(work: Path, build: Path, orthanc_port: int) -> str:
    """The viewer's files served by nginx at /, its config made as ours is, /dicom-web proxied."""
    config = work / "orthanc-viewer-config"
    config.mkdir()
    (config / "app-config.js").write_text(app_config("/", "/dicom-web", "/", can_store=False))
    (config / "init-service-worker.js").write_text("")
    return (f"server 127.0.0.1:{orthanc_port};|"
            f"root {build}; gzip_static on; types {{ application/wasm wasm; text/javascript js; text/css css;"
            f" text/html html; application/json json; }}\n"
            f"        location = /app-config.js {{ root {config}; }}\n"
            f"        location = /init-service-worker.js {{ root {config}; }}\n"
            f"        location /dicom-web/ {{ proxy_pass http://backend; }}\n"
            f"        location / {{ try_files $uri /index.html; }}")


def _open(context, url: str, frames: int) -> tuple[float, float, int]:
    page = context.new_page()
    received = []
    page.on("requestfinished", lambda r: received.append(time.perf_counter()) if "/frames/" in r.url else None)
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function(FIRST_IMAGE, timeout=60_000, polling=20)
    first = time.perf_counter() - start
    deadline = time.monotonic() + 120
    while len(received) < frames and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    last = (max(received) - start) if received else float("nan")
    count = len(received)
    page.close()
    return first, last, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "viewer.json")
    args = parser.parse_args()
    ensure_installed()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    builds = ROOT / ".cache" / "viewer"
    build = install(builds, VERSION)
    print("generating the study", flush=True)
    with multiprocessing.Pool(os.cpu_count()) as pool:
        series = make_series(work / "data", "ct", args.slices, pool)

    data = work / "ours"
    data.mkdir()
    (data / "viewer").symlink_to(builds)
    (data / "peers").write_text(
        f"dr-bench {hashlib.sha256(PERSON_KEY.encode()).hexdigest()} read person\n"
        f"loader {hashlib.sha256(SYSTEM_KEY.encode()).hexdigest()} read,store\n")
    ours = Server({"DICOMWEB_DATA_DIR": str(data), "DICOMWEB_TRUSTED_PROXIES": "1"}, free_port(), work / "ours.log")
    orthanc = start_orthanc(work)
    ours_url, ours_nginx = _nginx(work, "ours", f"server 127.0.0.1:{ours.port};|location / {{ proxy_pass http://backend; }}")
    orthanc_url, orthanc_nginx = _nginx(work, "orthanc", _orthanc_site(work, build, int(orthanc.base.rsplit(":", 1)[1])))
    results: dict[str, list] = {"ours": [], "orthanc": []}
    try:
        from bench.compare import Target

        load(Target("ours", ours.base, "/dicom-web", ours.process.pid, f"Bearer {SYSTEM_KEY}"), series.files)
        load(orthanc, series.files)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            contexts = {}
            for name, base in (("ours", ours_url), ("orthanc", orthanc_url)):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                if name == "ours":
                    page.goto(base + "/viewer/login")
                    page.fill("#key", PERSON_KEY)
                    page.click("button[type=submit]")
                    page.wait_for_url(base + "/viewer/")
                page.close()
                viewer = f"{base}/viewer/viewer" if name == "ours" else f"{base}/viewer"
                contexts[name] = (context, f"{viewer}?StudyInstanceUIDs={series.study}")
                _open(context, contexts[name][1], args.slices)   # the app's files into the cache
            for round_ in range(args.rounds):
                for name in (("ours", "orthanc") if round_ % 2 == 0 else ("orthanc", "ours")):
                    first, last, count = _open(*contexts[name], args.slices)
                    results[name].append({"first_image_s": round(first, 3), "all_frames_s": round(last, 3),
                                          "frames": count})
                    print(f"round {round_ + 1} {name}: first image {first:.2f} s, {count} frames in {last:.2f} s",
                          flush=True)
            browser.close()
    finally:
        for process in (ours_nginx, orthanc_nginx):
            stop_process(process, 10)
        ours.stop()
        orthanc.stop()
    summary = {name: {"first_image_s": statistics.median(r["first_image_s"] for r in runs),
                      "all_frames_s": statistics.median(r["all_frames_s"] for r in runs),
                      "frames": min(r["frames"] for r in runs)} for name, runs in results.items()}
    summary["ratio_first_image"] = round(summary["orthanc"]["first_image_s"] / summary["ours"]["first_image_s"], 2)
    summary["ratio_all_frames"] = round(summary["orthanc"]["all_frames_s"] / summary["ours"]["all_frames_s"], 2)
    args.out.write_text(json.dumps({"slices": args.slices, "rounds": results, "median": summary}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
