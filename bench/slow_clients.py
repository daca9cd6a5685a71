"""Slow clients against nginx (deploy/nginx/dicomweb.conf) in front of gunicorn: uploads that
trickle a byte a second and downloads that are never read, held open while another client
address searches. The test (tests/test_nginx.py) and the benchmark share this code.

    python -m bench.slow_clients [--slow 64] [--seconds 20]

starts gunicorn and nginx from the deployed files on free loopback ports, stores a 30 MB
study, opens the slow connections from 127.0.0.1 and searches from 127.0.0.2, and prints the
search latencies and what became of the slow connections (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.slow_clients import hold_and_search, tls_context

def main() -> None:
    import tempfile

    import requests

    from testbed.synthetic import ct_instance
    from pydicom.uid import generate_uid
    from testbed.server import free_port
    from testbed.messages import multipart_body, stow_headers
    from testbed.nginx import Nginx
    from testbed.server import Server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--searches", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slow-clients-"))
    key = "bench-key-0123456789"
    port = free_port()
    server = Server({"DICOMWEB_DATA_DIR": str(work / "var"), "DICOMWEB_API_KEY": key,
                     "DICOMWEB_TRUSTED_PROXIES": "1"}, port, work / "gunicorn.log")
    nginx = Nginx(work, port, free_port(), free_port())
    try:
        study = generate_uid()
        datas = [ct_instance(study, generate_uid(), rows=512, columns=512, number=n) for n in range(60)]
        requests.post(f"{server.base}/dicom-web/studies", data=multipart_body(datas), timeout=120,
                      headers={**stow_headers(), "Authorization": f"Bearer {key}"}).raise_for_status()
        result = hold_and_search(nginx.https_port, tls_context(nginx.cert), key, study, args.slow, args.searches)
        print(json.dumps(result, indent=2))
    finally:
        nginx.stop()
        server.stop()


if __name__ == "__main__":
    main()
