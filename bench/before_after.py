"""The same benchmarks on two versions of this server, interleaved in one run (these machines are
noisy: only ratios within one run count).

    git worktree add /tmp/before <commit>
    python -m bench.before_after /tmp/before [--rounds 3]

Starts gunicorn from each tree (its own deploy/gunicorn.conf.py) on a fresh data directory and
runs, round by round and alternating which goes first, bench.run (STOW, study and instance
retrieve), bench.frames (frames/1 of CT slices, frames of a multi-frame instance), bench.qido and
bench.rendered (rendered JPEG, WADO-URI, thumbnails) against each, then prints every figure of both and their ratio (this tree / the other).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789"


def start(tree: Path, work: Path, extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    from testbed.server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    env.update({"DICOMWEB_DATA_DIR": str(work), "DICOMWEB_API_KEY": KEY, "PYTHONPATH": str(tree), **(extra or {})})
    log = open(work.parent / f"{work.name}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", str(tree / "deploy" / "gunicorn.conf.py"),
                                "--bind", f"127.0.0.1:{port}", "wsgi:app"], cwd=tree, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                return process, base + "/dicom-web"
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn from {tree} did not start")


def bench(module: str, url: str, pid: int, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", module, "--url", url, "--key", KEY, *extra],
                         cwd=HERE, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])


def figures(report: dict, prefix: str = "") -> dict[str, float]:
    """The throughput and latency numbers of a report, flattened."""
    found = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(figures(value, name + "."))
        elif isinstance(value, (int, float)) and any(word in key for word in ("per_s", "p50", "p95", "mb_s", "MB")):
            found[name] = float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the other tree (a git worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-env", action="append", default=[], metavar="NAME=VALUE",
                        help="for the other tree's server (e.g. GUNICORN_CMD_ARGS=--threads=4)")
    parser.add_argument("--only", choices=["run", "frames", "qido", "rendered"], action="append", help="these benchmarks only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="before-after-"))
    extra = dict(item.split("=", 1) for item in args.before_env)
    servers = {"before": start(args.before.resolve(), work / "before", extra), "after": start(HERE, work / "after")}
    only = set(args.only or ["run", "frames", "qido", "rendered"])
    results: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name in order:
                process, url = servers[name]
                flat = {}
                if "run" in only:
                    flat.update(figures(bench("bench.run", url, process.pid, "--big-study-gb", "0", "--stow-studies",
                                              "2", "--repeat", "3", "--single-requests", "300"), "run."))
                if "frames" in only:
                    flat.update(figures(bench("bench.frames", url, process.pid, "--requests", "100"), "frames."))
                if "rendered" in only:
                    flat.update(figures(bench("bench.rendered", url, process.pid, "--repeat", "50", "--series", "100"),
                                        "rendered."))
                if "qido" in only:
                    flat.update(figures(bench("bench.qido", url, process.pid, "--rounds", "1"), "qido."))
                results[name].append(flat)
                print(f"round {round_ + 1}: {name} done", file=sys.stderr)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    names = sorted(set(results["before"][0]) & set(results["after"][0]))
    table = {}
    for name in names:
        before = statistics.median(r[name] for r in results["before"])
        after = statistics.median(r[name] for r in results["after"])
        table[name] = {"before": before, "after": after, "ratio": round(after / before, 3) if before else None,
                       "rounds": [[r[name] for r in results["before"]], [r[name] for r in results["after"]]]}
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
