"""Running the service under a real gunicorn, on a free loopback port, for end-to-end tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# What the service (service/__init__.py, service/auth.py) and gunicorn log for a defect.
UNEXPECTED_SIGNS = ("unhandled error on", "answer broken off", "Error handling request")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """Terminate ``process``, and kill it if it has not ended within ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.dicomweb = self.base + "/dicom-web"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
        full_env.update(env)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "deploy" / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "wsgi:app"],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
            try:
                if requests.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop gunicorn; AssertionError if any request it served reached the unexpected-exception
        handler or broke off an answer (as tests/conftest.py checks for in-process apps)."""
        stop_process(self.process, 15)
        self._log.close()
        defects = [line for line in self.log_path.read_text(errors="replace").splitlines()
                   if any(sign in line for sign in UNEXPECTED_SIGNS)]
        assert not defects, "gunicorn served a request that failed unexpectedly:\n" + "\n".join(defects[:5])
