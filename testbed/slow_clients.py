"""Slow clients against nginx in front of gunicorn: uploads that trickle a byte a second and
downloads that are never read, held open while another client address searches
(tests/test_nginx.py and bench/slow_clients.py)."""
from __future__ import annotations

import http.client
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def tls_context(cafile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    return context


@dataclass
class SlowClients:
    """Connections opened from ``source`` that hold a request open: uploads sending a byte a
    second, and downloads whose answers are never read."""

    port: int
    context: ssl.SSLContext
    key: str
    source: str = "127.0.0.1"
    sockets: list = field(default_factory=list)
    refused: int = 0          # answered at once (nginx's connection limit: 503) instead of held
    _stop: threading.Event = field(default_factory=threading.Event)

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(self.source, 0))
        return self.context.wrap_socket(raw, server_hostname="localhost")

    def _request(self, lines: list[str]) -> ssl.SSLSocket | None:
        conn = self._connect()
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        conn.settimeout(0.3)
        try:   # a connection nginx refuses is answered at once; a held one says nothing
            head = conn.recv(64)
            if head.startswith(b"HTTP/1.1 503"):
                self.refused += 1
                conn.close()
                return None
            conn.settimeout(10)
            return conn   # a download: its answer has started, and is not read any further
        except (socket.timeout, TimeoutError):
            conn.settimeout(10)
            return conn

    def upload(self) -> None:
        conn = self._request(["POST /dicom-web/studies HTTP/1.1", "Host: localhost", f"Authorization: Bearer {self.key}",
                              'Content-Type: multipart/related; type="application/dicom"; boundary=slow',
                              "Content-Length: 100000000"])
        if conn is not None:
            conn.sendall(b"--slow\r\n\r\n")
            self.sockets.append(conn)

    def download(self, study: str) -> None:
        conn = self._request([f"GET /dicom-web/studies/{study} HTTP/1.1", "Host: localhost",
                              f"Authorization: Bearer {self.key}", f"Accept: {ANY_SYNTAX}"])
        if conn is not None:
            self.sockets.append(conn)

    def trickle(self) -> None:
        """Keep the uploads alive, a byte a second each, until ``close``."""
        def run() -> None:
            while not self._stop.wait(1.0):
                for conn in list(self.sockets):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        pass
        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        for conn in self.sockets:
            try:
                conn.close()
            except OSError:
                pass


def timed_searches(port: int, context: ssl.SSLContext, key: str, count: int, source: str = "127.0.0.2") -> list[float]:
    """Seconds each of ``count`` searches took, one connection each, from ``source``."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=30,
                                           source_address=(source, 0))
        conn.request("GET", "/dicom-web/studies?limit=5", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"a search answered {response.status}")
        latencies.append(time.perf_counter() - started)
    return latencies


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def hold_and_search(port: int, context: ssl.SSLContext, key: str, study: str, slow: int, searches: int) -> dict:
    """Open ``slow`` slow connections (half uploads, half downloads), then time searches."""
    before = timed_searches(port, context, key, 10)
    clients = SlowClients(port, context, key)
    try:
        for n in range(slow):
            clients.upload() if n % 2 == 0 else clients.download(study)
        clients.trickle()
        time.sleep(2)   # every held connection has reached gunicorn (or been refused)
        during = timed_searches(port, context, key, searches)
        beyond = SlowClients(port, context, key)
        beyond.upload()   # one more from the same address
        beyond.close()
        return {"slow": slow, "held": len(clients.sockets), "refused": clients.refused,
                "one_more_refused": beyond.refused == 1,
                "before_p50_ms": statistics.median(before) * 1000, "p50_ms": statistics.median(during) * 1000,
                "p95_ms": p95(during) * 1000, "max_ms": max(during) * 1000}
    finally:
        clients.close()
