"""One search timed in process, without HTTP, on two versions of this server, alternating runs:
the overhead of the code between Flask and the catalog, which over HTTP hides in noise.

    git worktree add /tmp/before <commit>
    python -m bench.qido_in_process /tmp/before [--runs 5] [--requests 2000]

Each run is a fresh process that imports the service from one tree, stores 50 studies of two CT
instances in a temporary directory (disk + SQLite), and times ``--requests`` searches of 20
studies with every attribute (Flask's test client). Prints each run's mean in ms and the medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SEARCH = "/dicom-web/studies?limit=20&includefield=all"

_RUN = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[2])
from pydicom.uid import generate_uid
from service import create_app
from service.config import Config, Peer, hash_key
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance
app = create_app(Config(data_dir=Path(tempfile.mkdtemp()), peers=(Peer("p", hash_key("k")),), fsync=False))
client, auth = app.test_client(), {"Authorization": "Bearer k"}
for _ in range(50):
    study = generate_uid()
    client.post("/dicom-web/studies", headers={**auth, **stow_headers()},
                data=multipart_body([ct_instance(study, generate_uid(), rows=8, columns=8) for _ in range(2)]))
requests = int(sys.argv[4])
for _ in range(200):
    client.get(sys.argv[3], headers=auth)
started = time.perf_counter()
for _ in range(requests):
    answer = client.get(sys.argv[3], headers=auth)
assert answer.status_code == 200 and len(answer.get_json()) == 20
print(json.dumps((time.perf_counter() - started) / requests * 1000))
"""


def run(tree: Path, requests: int) -> float:
    out = subprocess.run([sys.executable, "-c", _RUN, str(tree), str(HERE), SEARCH, str(requests)],
                         cwd=tree, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the other tree (a git worktree)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.runs):
        for name, tree in (("before", args.before.resolve()), ("after", HERE)):
            times[name].append(round(run(tree, args.requests), 3))
    print(json.dumps({name: {"runs_ms": found, "median_ms": statistics.median(found)}
                      for name, found in times.items()}, indent=2))


if __name__ == "__main__":
    main()
