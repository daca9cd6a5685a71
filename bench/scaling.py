"""Scale-out benchmark: STOW rate and QIDO latency through 1 and 2 app nodes sharing one
PostgreSQL catalog and one S3 bucket (a moto server over HTTP on loopback).

    python -m bench.scaling [--clients 4] [--instances 400]

Each node is a gunicorn of deploy/gunicorn.conf.py on its own port; clients are spread
over the nodes, as an nginx upstream would spread them. Every run starts from an empty
catalog schema and bucket.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.run import _stow_worker, generate, latency, run_clients, start_server, timed_gets
from testbed.synthetic import StudySpec


def measure(nodes: int, clients: int, paths: list[Path], moto: str, catalog: str, work: Path) -> dict:
    import boto3

    bucket = f"scaling{time.time_ns()}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    env = {"DICOMWEB_STORAGE": f"s3://{bucket}/a", "DICOMWEB_S3_ENDPOINT_URL": moto, "DICOMWEB_CATALOG_URL": catalog,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for n in range(nodes):
        (work / f"node{n}-{nodes}").mkdir(parents=True, exist_ok=True)
    servers = [start_server(work / f"node{n}-{nodes}", env) for n in range(nodes)]
    try:
        urls = [s[1] for s in servers]
        key = servers[0][2]
        batches = [[str(p) for p in paths[i:i + 10]] for i in range(0, len(paths), 10)]
        shares = [(urls[c % nodes], key, batches[c::clients], ) for c in range(clients)]
        results = run_clients(_stow_worker, shares)
        stored, seconds = sum(r[0] for r in results), max(r[1] for r in results)
        searches = [f"/studies?limit=20&offset={i % 5}&includefield=StudyDescription" for i in range(200)]
        timings = run_clients(timed_gets, [(urls[c % nodes], key, searches, "application/dicom+json")
                                           for c in range(clients)])
        every = [t for ts in timings for t in ts]
        return {"nodes": nodes, "stow_instances_per_s": round(stored / seconds, 1),
                "qido": {**latency(every), "requests_per_s": round(len(every) / sum(every) * clients, 1)}}
    finally:
        for server in servers:
            server[0].stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--out", default="bench/results/scaling.json")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    from testbed.postgres import schema as postgres_schema
    from testbed.server import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as work:
            spec = StudySpec(series=4, instances_per_series=args.instances // 40, rows=256, columns=256)
            paths = [p for study in generate(Path(work) / "data", spec, 10) for p in study]
            for nodes in (1, 2):
                with postgres_schema(f"scaling{nodes}") as catalog:
                    results.append(measure(nodes, args.clients, paths, f"http://127.0.0.1:{port}", catalog,
                                           Path(work)))
                print(results[-1], flush=True)
    finally:
        moto.stop()
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
