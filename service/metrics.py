"""Prometheus metrics: requests by transaction and status, bytes sent, latency, ingest.

The audit middleware, which sees every answer's status and the bytes really sent when its
body ends, records them here. Under gunicorn, workers are separate processes: with
PROMETHEUS_MULTIPROC_DIR set (deploy/gunicorn.conf.py sets it) each writes its own files and
``GET /metrics`` adds them up.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("dicomweb_requests_total", "Requests answered", ["transaction", "status"])
BYTES_SENT = Counter("dicomweb_response_bytes_total", "Bytes of answers sent", ["transaction"])
LATENCY = Histogram("dicomweb_request_seconds", "Time from request to the end of its answer", ["transaction"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
INSTANCES = Counter("dicomweb_instances_total", "Instances offered to STOW-RS", ["result"])   # stored, failed
# Requests that reached the error handler's last resort: a defect, whatever the input was.
# The test suite fails when any of its requests increments it (tests/conftest.py).
UNEXPECTED = Counter("dicomweb_unexpected_errors_total", "Requests answered 500 by an unexpected exception",
                     ["transaction"])


# Lines of the peers file skipped as unreadable (service.auth.PeerSource): 0 when all is well.
PEERS_FILE_PROBLEMS = Gauge("dicomweb_peers_file_problems", "Lines of the peers file that could not be read",
                            multiprocess_mode="max")

# The DIMSE listener (service.dimse), a process of its own: counted here when it shares
# PROMETHEUS_MULTIPROC_DIR with gunicorn's workers (make serve and deploy/systemd do).
DIMSE_CONNECTIONS = Gauge("dicomweb_dimse_connections", "TCP connections the DIMSE listener holds open",
                          multiprocess_mode="livesum")
DIMSE_ASSOCIATIONS = Counter("dicomweb_dimse_associations_total", "Associations asked for", ["result"])   # accepted, rejected
DIMSE_OPERATIONS = Counter("dicomweb_dimse_operations_total", "DIMSE requests answered", ["operation", "status"])
DIMSE_REFUSED = Counter("dicomweb_dimse_refused_total", "Connections and messages cut at a bound", ["reason"])


def observe(transaction: str | None, status: int | None, sent: int, seconds: float) -> None:
    transaction = transaction or "other"
    REQUESTS.labels(transaction, str(status)).inc()
    BYTES_SENT.labels(transaction).inc(sent)
    LATENCY.labels(transaction).observe(seconds)


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The metrics text, of every worker process when they share ``multiprocess_dir``."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_ended(multiprocess_dir: str | None) -> None:
    """A process that shared ``multiprocess_dir`` ends: its live gauges leave the sums."""
    if multiprocess_dir:
        import os

        multiprocess.mark_process_dead(os.getpid(), multiprocess_dir)
