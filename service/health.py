"""GET /health: unauthenticated liveness and readiness for load balancers."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .web import archive

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    try:
        archive().catalog.ping()
    except Exception:
        return jsonify(status="unavailable", catalog="unreachable"), 503
    return jsonify(status="ok")
