"""Debian's Orthanc as a DIMSE peer for the tests: its DICOM server on a port chosen here, the
archive's listener among its modalities, its REST API (loopback only) to drive it."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import requests

from .server import free_port, stop_process


class Orthanc:
    def __init__(self, work: Path, ae_title: str, modalities: dict[str, tuple[str, str, int]]) -> None:
        self.ae_title, self.dicom_port, self.http_port = ae_title, free_port(), free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test", "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAet": ae_title, "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False, "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
            "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "index"),
            "StorageCompression": False, "DicomScuTimeout": 30,
        }
        (work / "orthanc.json").write_text(json.dumps(config))
        self._log = open(work / "orthanc.log", "wb")
        self.process = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.log_path = work / "orthanc.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/system", timeout=1).status_code == 200:
                    socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1).close()
                    return
            except (requests.ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not start within 60 s")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def post(self, path: str, body: object, timeout: float = 120) -> requests.Response:
        return requests.post(f"{self.base}{path}", data=json.dumps(body), timeout=timeout)

    def get(self, path: str, timeout: float = 60) -> requests.Response:
        return requests.get(f"{self.base}{path}", timeout=timeout)

    def stop(self) -> None:
        stop_process(self.process, 30)
        self._log.close()
