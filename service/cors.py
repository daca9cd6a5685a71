"""Cross-origin access for browser viewers (OHIF and others call the server directly).

Off unless ``DICOMWEB_CORS_ORIGINS`` lists origins (or ``*``). Preflight requests
carry no credentials, so they are answered before authentication; the actual
requests still need their API key. Every answer then says ``Vary: Origin`` (a shared
cache must not hand one origin's answer to another) and ``Cross-Origin-Resource-Policy:
cross-origin``, so that rendered images and documents load inside a cross-origin-isolated
viewer (one served with ``Cross-Origin-Embedder-Policy: require-corp``, as OHIF's builds may).
"""
from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Accept, Content-Type, If-None-Match, Range"
EXPOSED_HEADERS = "Warning, Content-Location, Content-Length, Content-Range, Content-Type, ETag, Location"
MAX_AGE = "600"


def allowed_origin(origin: str | None, origins: tuple[str, ...]) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when ``origin`` is not allowed."""
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def install(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return

    @app.before_request
    def preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response(status=204)
        allowed = allowed_origin(request.headers.get("Origin"), origins)
        if allowed:
            response.headers.update({
                "Access-Control-Allow-Origin": allowed,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            })
        response.headers["Vary"] = "Origin"
        return response

    @app.after_request
    def cross_origin(response: Response) -> Response:
        if "Access-Control-Allow-Origin" in response.headers:   # a preflight's
            return response
        allowed = allowed_origin(request.headers.get("Origin"), origins)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.vary.add("Origin")
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return response
