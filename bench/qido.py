"""QIDO-RS latency benchmark: the common searches, 4 concurrent clients, p50/p95 per search.

    python -m bench.qido --catalog sqlite:///var/bench.sqlite      # start our server on that catalog
    python -m bench.qido --url http://127.0.0.1:8042/dicom-web     # any DICOMweb server

Sample values (patient IDs, names, dates, accession numbers, study UIDs) are
taken from the server itself with one QIDO request, so the same run works on
any server. Fill a large catalog first with ``python -m bench.catalog_fill``.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import random
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench.run import latency, run_clients


def _get(conn: http.client.HTTPConnection, path: str, headers: dict) -> tuple[int, bytes]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def sample_queries(url: str, key: str | None, rng: random.Random, count: int = 40) -> dict[str, list[str]]:
    """Search paths per kind, built from values the archive holds."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    headers = {"Accept": "application/dicom+json", **({"Authorization": f"Bearer {key}"} if key else {})}
    base = parts.path.rstrip("/")
    studies: list[dict] = []
    # Spread the samples over the archive (late studies too), falling back to its start when small.
    for offset in (rng.randint(0, 90_000), rng.randint(0, 9_000), 0):
        status, body = _get(conn, f"{base}/studies?limit=500&offset={offset}", headers)
        if status != 200:
            raise RuntimeError(f"sampling answered {status}: {body[:200]!r}")
        studies = json.loads(body)
        if studies:
            break

    def value(study: dict, tag: str):
        values = study.get(tag, {}).get("Value") or [None]
        return values[0]

    def q(text: str) -> str:
        return urllib.parse.quote(text, safe="*^,=-")

    picks = [rng.choice(studies) for _ in range(count)]
    queries: dict[str, list[str]] = {k: [] for k in (
        "PatientID", "PatientName prefix", "PatientName fuzzy", "StudyDate range", "AccessionNumber",
        "ModalitiesInStudy", "StudyInstanceUID list", "series of a study", "instances of a study")}
    for study in picks:
        name = value(study, "00100010") or {}
        alphabetic = name.get("Alphabetic", "") if isinstance(name, dict) else str(name)
        family, _, rest = alphabetic.partition("^")
        given = rest.split("^")[0] if rest else family
        date = value(study, "00080020") or "20200101"
        end = (datetime.date(int(date[:4]), int(date[4:6]), int(date[6:8])) + datetime.timedelta(days=7))
        uid = value(study, "0020000D")
        queries["PatientID"].append(f"/studies?PatientID={q(value(study, '00100020') or '')}&limit=100")
        queries["PatientName prefix"].append(f"/studies?PatientName={q(family[:3])}*&limit=100")
        queries["PatientName fuzzy"].append(f"/studies?PatientName={q(given.lower())}&fuzzymatching=true&limit=100")
        queries["StudyDate range"].append(f"/studies?StudyDate={date}-{end:%Y%m%d}&limit=100")
        queries["AccessionNumber"].append(f"/studies?AccessionNumber={q(value(study, '00080050') or '')}&limit=100")
        queries["ModalitiesInStudy"].append(f"/studies?ModalitiesInStudy={rng.choice(['CT', 'MR', 'US', 'PT'])}&limit=100")
        others = ",".join(value(rng.choice(studies), "0020000D") for _ in range(4))
        queries["StudyInstanceUID list"].append(f"/studies?StudyInstanceUID={uid},{others}&limit=100")
        queries["series of a study"].append(f"/studies/{uid}/series?limit=100")
        queries["instances of a study"].append(f"/studies/{uid}/instances?limit=100")
    return {kind: [base + path for path in paths] for kind, paths in queries.items()}


def _client(url: str, key: str | None, queries: dict[str, list[str]], rounds: int, results) -> None:  # noqa: ANN001
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Accept": "application/dicom+json", **({"Authorization": f"Bearer {key}"} if key else {})}
    timings: dict[str, list[float]] = {kind: [] for kind in queries}
    counts: dict[str, int] = {kind: 0 for kind in queries}
    for _ in range(rounds):
        for kind, paths in queries.items():
            for path in paths:
                start = time.perf_counter()
                status, body = _get(conn, path, headers)
                timings[kind].append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
                counts[kind] += len(json.loads(body)) if body else 0
    results.put((timings, counts))


def measure(url: str, key: str | None, clients: int, rounds: int, seed: int = 7) -> dict:
    queries = sample_queries(url, key, random.Random(seed))
    _client(url, key, queries, 1, multiprocessing.Queue())  # warm up caches, once
    gathered = run_clients(_client, [(url, key, queries, rounds)] * clients)
    report = {}
    for kind in queries:
        samples = [t for timings, _ in gathered for t in timings[kind]]
        results = sum(counts[kind] for _, counts in gathered)
        report[kind] = {"requests": len(samples), "mean_results": round(results / len(samples), 1),
                        **latency(samples)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="DICOMweb base URL of a running server")
    parser.add_argument("--key", help="API key (Authorization: Bearer)")
    parser.add_argument("--catalog", help="start our server under gunicorn on this catalog URL")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 40 queries of each kind, per client")
    args = parser.parse_args()
    server = None
    if args.catalog:
        from bench.run import start_server

        workdir = Path(tempfile.mkdtemp(prefix="dicomweb-qido-"))
        server, url, key, _ = start_server(workdir, {"DICOMWEB_CATALOG_URL": args.catalog})
    elif args.url:
        url, key = args.url, args.key
    else:
        parser.error("give --catalog or --url")
    try:
        print(json.dumps({"url": url, "clients": args.clients, "results": measure(url, key, args.clients,
                                                                                   args.rounds)}, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
