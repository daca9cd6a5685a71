"""Unauthenticated endpoints for load balancers and monitoring: GET /health (the process
answers), GET /ready (the catalog and the blob store answer too), GET /metrics (Prometheus).
nginx keeps /metrics to the inside (deploy/nginx/dicomweb.conf)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import metrics
from .web import archive

bp = Blueprint("health", __name__)
UNAUTHENTICATED = {"health.health", "health.ready", "health.prometheus", "openapi.openapi_document"}


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    checks = {}
    for name, ping in (("catalog", archive().catalog.ping), ("store", archive().blobs.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception:   # whatever the driver raises, the answer is: not ready
            checks[name] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if ok else "unavailable", **checks), 200 if ok else 503


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
