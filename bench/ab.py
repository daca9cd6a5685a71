"""Two trees of this server side by side on the same data, interleaved, for the workloads of
bench.compare that a change is meant to move (these machines are noisy: only ratios within one
run count; bench.before_after runs the older, broader benchmarks).

    git worktree add /tmp/before <commit>
    python -m bench.ab /tmp/before [--rounds 6] [--seconds 4] [--only study_rle ...]

Starts gunicorn from each tree (its own deploy/gunicorn.conf.py, fresh data directories), stores
the same phantom series in both (uncompressed, RLE and JPEG lossless, as bench.compare makes them), then runs
each workload (wrk for GETs, bench.compare's STOW clients for stow_ct and stow_tiny) against one
tree and the other, the order alternating, and prints the median rate of each and the median of
the per-round ratios (this tree / the other).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import compare
from bench.before_after import HERE, KEY, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the other tree (a git worktree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--only", action="append", help="these workloads only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    servers = {"before": start(args.before.resolve(), work / "before"), "after": start(HERE, work / "after")}
    targets = {name: compare.Target(name, url.rsplit("/dicom-web", 1)[0], "/dicom-web", process.pid, f"Bearer {KEY}")
               for name, (process, url) in servers.items()}
    try:
        with multiprocessing.Pool(2) as pool:
            series = {name: compare.make_series(work, name, args.slices, pool) for name in ("ct", "rle", "jpeg_lossless")}
        for target in targets.values():
            for s in series.values():
                compare.load(target, s.files)

        def instances(name: str, suffix: str = "") -> list[str]:
            s = series[name]
            return ["/dicom-web" + s.instance_path(i) + suffix for i in range(len(s.instances))]

        def study(name: str) -> list[str]:
            return [f"/dicom-web/studies/{series[name].study}"]
        workloads = {
            "study_ct": (study("ct"), compare.AS_STORED),
            "study_rle": (study("rle"), compare.AS_STORED),
            "study_rle_decoded": (study("rle"), compare.DEFAULT),
            "study_jpeg_lossless_decoded": (study("jpeg_lossless"), compare.DEFAULT),
            "frames1": (instances("ct", "/frames/1"), compare.FRAMES_ANY),
            "rendered": (instances("ct", "/rendered"), "image/jpeg"),
            "instance": (instances("ct"), compare.AS_STORED),
        }
        stows = {"stow_ct": (15, 512), "stow_tiny": (50, 64)}   # requests of 10 per client, slice size
        table = {}
        for name in [*workloads, *stows]:
            if args.only and name not in args.only:
                continue
            rates: dict[str, list[float]] = {"before": [], "after": []}
            for round_ in range(args.rounds):
                for side in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                    if name in stows:
                        batches, size = stows[name]
                        rates[side].append(compare.stow(targets[side], 4, batches, 10, size)["rate"])
                        continue
                    paths, accept = workloads[name]
                    compare.wrk(targets[side], paths, accept, 1, 4, work)   # warm-up
                    rates[side].append(compare.wrk(targets[side], paths, accept, args.seconds, 4, work)["rate"])
            ratios = [a / b for a, b in zip(rates["after"], rates["before"])]
            table[name] = {"before": statistics.median(rates["before"]), "after": statistics.median(rates["after"]),
                           "ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios]}
            print(name, json.dumps(table[name]), flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
