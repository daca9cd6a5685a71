"""NCPeH facade and FHIR benchmark (issue 9).

    python -m bench.facade [--clients 4] [--studies 100000]

1. QIDO-RS through a facade (our server with DICOMWEB_UPSTREAMS_FILE) with 1 upstream, then
   with 3 (two of them instances of this server, one slow: it answers after 2 s and the
   facade gives it 0.5 s).
2. WADO-RS study throughput: a 50-slice study (26 MB) streamed from an upstream through the
   facade, against the same study served by the facade from its own archive.
3. FHIR ImagingStudy search p50/p95 on a catalog of ``--studies`` studies (bench.catalog_fill).
Every server is gunicorn with deploy/gunicorn.conf.py on loopback.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import requests
from pydicom.uid import generate_uid

from bench.run import latency, retrieve, run_clients, start_server, timed_gets
from testbed.synthetic import ct_instance
from testbed.messages import multipart_body, slow_upstream, stow_headers

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _latency(url: str, key: str, paths: list[str], clients: int) -> dict:
    accept = "application/dicom+json, application/fhir+json"
    every = [t for ts in run_clients(timed_gets, [(url, key, paths, accept)] * clients) for t in ts]
    return {**latency(every), "requests": len(every)}


def _store(url: str, key: str, datas: list[bytes]) -> None:
    requests.post(url + "/studies", data=multipart_body(datas), headers={"Authorization": f"Bearer {key}",
                                                                          **stow_headers()}, timeout=120).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--out", default="bench/results/facade.json")
    args = parser.parse_args()
    from storage.catalog import Catalog

    from bench.catalog_fill import fill
    results: dict = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        running = []
        slow = slow_upstream(2)
        try:
            upstreams = []
            for name in ("a", "b"):
                (work / name).mkdir()
                running.append(start_server(work / name, {}))
                upstreams.append(running[-1])
            study, series = generate_uid(), generate_uid()
            slices = [ct_instance(study, series, number=n, rows=512, columns=512, patient_id="EU-42") for n in range(50)]
            _store(upstreams[0][1], upstreams[0][2], slices)
            for n in range(20):
                _store(upstreams[1][1], upstreams[1][2], [ct_instance(generate_uid(), generate_uid(), rows=8, columns=8,
                                                                      patient_id="EU-42")])
            files = {}
            for label, chosen in (("1 upstream", upstreams[:1]), ("3 upstreams, one slow", upstreams)):
                entries = [{"name": f"up{i}", "url": u[1], "bearer": u[2], "timeout": 5} for i, u in enumerate(chosen)]
                if len(chosen) > 1:
                    entries.append({"name": "slow", "url": f"http://127.0.0.1:{slow.server_port}/dicom-web",
                                    "timeout": 0.5, "serves": ["search"]})
                files[label] = work / f"{len(entries)}.json"
                files[label].write_text(json.dumps(entries))
            results["qido"] = {}
            for label, path in files.items():
                (work / label).mkdir()
                server = start_server(work / label, {"DICOMWEB_UPSTREAMS_FILE": str(path)})
                try:
                    results["qido"][label] = _latency(server[1], server[2], ["/studies?PatientID=EU-42&limit=50"] * 25,
                                                      args.clients)
                    if label == "1 upstream":
                        results["wado_from_upstream"] = retrieve(server[1], server[2], f"/studies/{study}", ANY,
                                                                 args.clients, 5)
                        _store(server[1], server[2], slices)
                        results["wado_local"] = retrieve(server[1], server[2], f"/studies/{study}", ANY, args.clients, 5)
                finally:
                    server[0].stop()
                print(label, results["qido"][label], flush=True)
            (work / "fhir").mkdir()
            catalog_url = f"sqlite:///{work / 'fhir' / 'catalog.sqlite'}"
            catalog = Catalog(catalog_url)
            catalog.create_schema()
            fill(catalog, args.studies, verbose=False)
            catalog.dispose()
            server = start_server(work / "fhir", {"DICOMWEB_CATALOG_URL": catalog_url})
            try:
                paths = ["/fhir/ImagingStudy?modality=CT&_count=20", "/fhir/ImagingStudy?started=ge2020-01-01&started=le2020-03-31&_count=20",
                         "/fhir/ImagingStudy?identifier=A000012345"]
                base = server[1].rsplit("/dicom-web", 1)[0]
                results["fhir"] = {p: _latency(base, server[2], [p] * 20, args.clients) for p in paths}
            finally:
                server[0].stop()
        finally:
            slow.shutdown()
            for server in running:
                server[0].stop()
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
