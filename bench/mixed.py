"""Mixed load through nginx: STOW, QIDO, metadata, WADO and rendered together.

    python -m bench.mixed [--clients 8] [--seconds 300]

Starts our server under gunicorn and deploy/nginx/dicomweb.conf's nginx in front (as
tests/nginx.py does), stores a few studies, then runs ``--clients`` client processes for
``--seconds``, each picking transactions at random in fixed proportions. Records errors,
p50/p95 per transaction and the server's memory (PSS of master and workers) over time.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import requests
from pydicom.uid import generate_uid

from bench.run import latency, run_clients, server_memory, start_server
from testbed.synthetic import ct_instance, phantom

MIX = [("stow", 0.10), ("qido", 0.30), ("metadata", 0.20), ("wado", 0.25), ("rendered", 0.15)]


def _client(base: str, cert: str, key: str, studies: list, seconds: float, seed: int, results) -> None:  # noqa: ANN001
    from testbed.messages import multipart_body, stow_headers

    rng = random.Random(seed)
    session = requests.Session()
    session.trust_env = False
    session.verify = cert
    session.headers["Authorization"] = f"Bearer {key}"
    timings: dict[str, list[float]] = {name: [] for name, _ in MIX}
    errors: list[str] = []
    names, weights = zip(*MIX)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = rng.choices(names, weights)[0]
        study, series, sop = rng.choice(studies)
        start = time.perf_counter()
        try:
            if name == "stow":
                batch = [ct_instance(study, generate_uid(), rows=128, columns=128, seed=rng.randrange(1 << 30))
                         for _ in range(5)]
                r = session.post(base + "/studies", data=multipart_body(batch), headers=stow_headers(), timeout=60)
            elif name == "qido":
                r = session.get(base + "/studies", params={"limit": 20, "ModalitiesInStudy": "CT"}, timeout=60)
            elif name == "metadata":
                r = session.get(f"{base}/studies/{study}/metadata", timeout=60)
            elif name == "wado":
                r = session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}", timeout=60,
                                headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            else:
                r = session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}/rendered", timeout=60)
            r.content
            if r.status_code != 200:
                errors.append(f"{name} {r.status_code}")
        except requests.RequestException as exc:
            errors.append(f"{name} {type(exc).__name__}")
        timings[name].append(time.perf_counter() - start)
    results.put((timings, errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--out", default="bench/results/mixed.json")
    args = parser.parse_args()
    from testbed.server import free_port
    from testbed.messages import multipart_body, stow_headers
    from testbed.nginx import Nginx

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "app").mkdir()
        server, url, key, pid = start_server(work / "app", {"DICOMWEB_TRUSTED_PROXIES": "1"})
        nginx = Nginx(work, int(url.split(":")[2].split("/")[0]), free_port(), free_port())
        base = f"{nginx.base}/dicom-web"
        session = requests.Session()
        session.trust_env, session.verify = False, str(nginx.cert)
        session.headers["Authorization"] = f"Bearer {key}"
        studies = []
        try:
            for s in range(5):
                study, series = generate_uid(), generate_uid()
                datas = [ct_instance(study, series, number=n, rows=512, columns=512, pixels=phantom(512, 512, n))
                         for n in range(20)]
                session.post(base + "/studies", data=multipart_body(datas), headers=stow_headers()).raise_for_status()
                studies += [(study, series, ct.SOPInstanceUID) for ct in map(_read, datas)]
            memory, done = [], threading.Event()

            def sample():
                while not done.wait(5):
                    memory.append(round(server_memory(pid)[1] / 1e6))   # PSS, MB

            sampler = threading.Thread(target=sample)
            sampler.start()
            results = run_clients(_client, [(base, str(nginx.cert), key, studies, args.seconds, c)
                                            for c in range(args.clients)])
            done.set()
            sampler.join()
        finally:
            nginx.stop()
            server.stop()
    timings = {name: [t for r in results for t in r[0][name]] for name, _ in MIX}
    errors = [e for r in results for e in r[1]]
    report = {"clients": args.clients, "seconds": args.seconds, "errors": len(errors), "error_kinds": sorted(set(errors)),
              "requests": sum(len(t) for t in timings.values()),
              "transactions": {name: {"count": len(t), **latency(t)} for name, t in timings.items() if t},
              "server_memory_mb": {"first": memory[0] if memory else None, "last": memory[-1] if memory else None,
                                   "max": max(memory, default=None)}}
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2))


def _read(data: bytes):
    from testbed.messages import read
    return read(data)


if __name__ == "__main__":
    main()
