"""Unauthenticated endpoints for load balancers and monitoring: GET /health (the process
answers), GET /ready (the catalog and the blob store answer too), GET /metrics (Prometheus).
nginx keeps /metrics to the inside (deploy/nginx/dicomweb.conf)."""
from __future__ import annotations

from flask import Response, current_app, jsonify, request

from . import metrics
from .auth import SOCKET_PEER_ENVIRON_KEY
from .config import in_networks
from .errors import NotFound
from .web import archive, settings


def health():
    return jsonify(status="ok")


def ready():
    checks = {name: "ok" if up else "unreachable" for name, up in archive().readiness().items()}
    ok = all(v == "ok" for v in checks.values())
    # Ready either way (the valid lines are in force), but said: an operator must mend the file.
    problems = current_app.extensions["peers"].problems
    return jsonify(status="ok" if ok else "unavailable", **checks,
                   peers_file="ok" if not problems else list(problems)), 200 if ok else 503


def prometheus():
    # No key needed, so only for the addresses DICOMWEB_METRICS_FROM names (loopback by default);
    # the socket's own peer counts, not what a forwarded header claims.
    if not in_networks(request.environ.get(SOCKET_PEER_ENVIRON_KEY), current_app.config["DICOMWEB"].metrics_from):
        raise NotFound("no such resource")
    body, content_type = metrics.exposition(settings().prometheus_multiproc_dir)
    return Response(body, content_type=content_type)
