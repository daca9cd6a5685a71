"""A real nginx in front of a test gunicorn, its configuration made from deploy/nginx/dicomweb.conf.

Only the addresses, the server name and the certificate change (each substitution must
apply, so the test follows the deployed file); every other setting is the deployed one.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from testbed.server import stop_process

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED = ROOT / "deploy" / "nginx" / "dicomweb.conf"


def available() -> bool:
    return shutil.which("nginx") is not None and shutil.which("openssl") is not None


class Nginx:
    def __init__(self, workdir: Path, upstream_port: int, https_port: int, http_port: int) -> None:
        self.workdir, self.https_port, self.http_port = workdir, https_port, http_port
        self.cert, self.key = workdir / "cert.pem", workdir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(self.key), "-out", str(self.cert)], check=True, capture_output=True)
        site = DEPLOYED.read_text()
        for old, new in [
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
            ("listen 443 ssl default_server;", f"listen 127.0.0.1:{https_port} ssl default_server;"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
            ("listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;"),
            ("listen 80;", f"listen 127.0.0.1:{http_port};"),
            ("dicomweb.example.org", "localhost"),
            ("/etc/ssl/certs/dicomweb.pem", str(self.cert)),
            ("/etc/ssl/private/dicomweb.key", str(self.key)),
        ]:
            if old not in site:
                raise AssertionError(f"deploy/nginx/dicomweb.conf no longer has {old!r}")
            site = site.replace(old, new)
        (workdir / "dicomweb.conf").write_text(site)
        temp = "".join(f"{kind}_temp_path {workdir / kind};\n    "
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # Run as root, nginx's workers would be "nobody" and could not write its temporary
        # files under a test's private directory; they stay root here.
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'};
events {{ worker_connections 512; }}
http {{
    access_log off;
    {temp}include {workdir / 'dicomweb.conf'};
}}
""")
        self.process = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                         "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait()

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https_port}"

    def _wait(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen in time")

    def temp_bytes(self) -> int:
        """Bytes nginx holds in its temporary files (answers and request bodies). nginx unlinks
        them as soon as it opens them, so they are found through its workers' open files."""
        total = 0
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        for pid in [self.process.pid, *map(int, children.split())]:
            fds = Path(f"/proc/{pid}/fd")
            for fd in fds.iterdir() if fds.exists() else ():
                try:
                    target = os.readlink(fd)
                    if target.startswith(str(self.workdir)) and ("/proxy/" in target or "/client_body/" in target):
                        total += os.stat(fd).st_size
                except OSError:
                    continue
        return total

    def stop(self) -> None:
        stop_process(self.process, 10)
