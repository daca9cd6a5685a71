"""Delete of a 1,000-instance study: the time until it is invisible (the catalog commit) and
until its blobs are gone, on disk and on S3 (moto over HTTP, on loopback).

    python -m bench.delete [--instances 1000] [--rounds 3]

Through the archive (storage.Archive.delete), as the DELETE view calls it; SQLite catalog,
fsync on. Each round stores a new study of 64² slices first (not timed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pydicom.uid import generate_uid

from storage import Archive, Catalog, open_blob_store
from testbed.server import ROOT, free_port
from testbed.synthetic import ct_instance


def _store(archive: Archive, count: int) -> str:
    study, series = generate_uid(), generate_uid()
    for start in range(0, count, 50):
        batch = archive.batch()
        for n in range(start, min(start + 50, count)):
            batch.add(io.BytesIO(ct_instance(study, series, number=n + 1, rows=64, columns=64)))
        assert all(o.failure is None for o in batch.commit())
    return study


def _round(archive: Archive, count: int) -> dict:
    study = _store(archive, count)
    original = archive.remove_doomed
    archive.remove_doomed = lambda *a, **k: 0   # the two steps timed apart
    start = time.perf_counter()
    assert archive.delete(study) == count
    invisible = time.perf_counter() - start
    archive.remove_doomed = original
    while archive.remove_doomed():
        pass
    gone = time.perf_counter() - start
    assert not archive.instances(study)
    return {"invisible_s": round(invisible, 3), "blobs_gone_s": round(gone, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "delete.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-delete-"))
    results = {}

    import boto3
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    try:
        for store, location in (("disk", str(work / "blobs")), ("s3", "s3://bench/archive")):
            catalog = Catalog(f"sqlite:///{work / f'{store}.sqlite'}")
            catalog.create_schema()
            archive = Archive(open_blob_store(location, endpoint if store == "s3" else None), catalog)
            rounds = [_round(archive, args.instances) for _ in range(args.rounds)]
            results[store] = {"rounds": rounds,
                              "invisible_s": statistics.median(r["invisible_s"] for r in rounds),
                              "blobs_gone_s": statistics.median(r["blobs_gone_s"] for r in rounds)}
            print(store, json.dumps(results[store]), flush=True)
    finally:
        moto.stop()
    args.out.write_text(json.dumps({"instances": args.instances, **results}, indent=2))


if __name__ == "__main__":
    main()
