"""Unauthenticated endpoints for load balancers and monitoring: GET /health (the process
answers), GET /ready (the catalog, the blob store and the DIMSE listener answer too), GET /metrics (Prometheus).
nginx keeps /metrics to the inside (deploy/nginx/dicomweb.conf)."""
from __future__ import annotations

from flask import Response, current_app, jsonify, request

from . import metrics
from .auth import SOCKET_PEER_ENVIRON_KEY
from .config import in_networks
from .dimse import accepts_connections
from .errors import NotFound
from .web import archive, settings


def health():
    return jsonify(status="ok")


def ready():
    checks = {name: "ok" if up else "unreachable" for name, up in archive().readiness().items()}
    ok = all(v == "ok" for v in checks.values())
    # Said, but ready either way: the HTTP side serves without them (the valid lines of the peers
    # file are in force; this node's DIMSE listener, a process of its own, has its own port to watch).
    problems = current_app.extensions["peers"].problems
    config = settings()
    listeners = {name: "ok" if accepts_connections(bind) else "unreachable"
                 for name, bind in (("dimse", config.dimse_bind), ("dimse_tls", config.dimse_tls_bind)) if bind}
    return jsonify(status="ok" if ok else "unavailable", **checks, **listeners,
                   peers_file="ok" if not problems else list(problems)), 200 if ok else 503


def prometheus():
    # No key needed, so only for the addresses DICOMWEB_METRICS_FROM names (loopback by default);
    # the socket's own peer counts, not what a forwarded header claims.
    if not in_networks(request.environ.get(SOCKET_PEER_ENVIRON_KEY), current_app.config["DICOMWEB"].metrics_from):
        raise NotFound("no such resource")
    body, content_type = metrics.exposition(settings().prometheus_multiproc_dir)
    return Response(body, content_type=content_type)
