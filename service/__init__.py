"""The DICOMweb origin server: ``create_app`` is the only place an app is made."""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from storage.search import QueryError
from storage.signins import SigninFailures
from storage.worklist import Worklist

from . import capabilities, content_policy, metrics, routes, viewer
from .auth import (
    CHALLENGE, CREDENTIALS_ENVIRON_KEY, PEER_ENVIRON_KEY, PERMISSIONS_ENVIRON_KEY, SOCKET_PEER_ENVIRON_KEY, TRANSACTION_ENVIRON_KEY,
    AuditMiddleware, PeerSource, identify, presented_key, required_permission,
)
from .config import Config, in_networks
from .errors import BadRequest, DicomWebError, Forbidden, Unauthorized
from .handover import Handover
from .limits import TranscodeLimits
from .sessions import LoginFailures, RedisFailures, Sessions
from .wiring import anonymize_secret, make_archive, make_facade, session_secret
from .worklist.channel import Bell

log = logging.getLogger(__name__)


def create_app(config: Config | None = None) -> Flask:
    """Build the WSGI app from ``config``, or from the environment when None."""
    config = config or Config.from_env(os.environ)
    peers = PeerSource(config.peers, config.peers_file, config.peers_recheck_seconds)
    if config.auth_enabled and not peers.current():
        raise ValueError("authentication is on but no API key is configured: set DICOMWEB_API_KEY, "
                         "add one with `dicomweb keys add NAME`, or turn authentication off with DICOMWEB_AUTH=off")
    app = Flask(__name__, static_folder=None)
    app.config["DICOMWEB"] = config
    app.extensions["peers"] = peers
    app.extensions["facade"] = make_facade(config)
    app.extensions["archive"] = make_archive(config)
    app.extensions["anonymize_secret"] = anonymize_secret(config)
    app.extensions["sessions"] = Sessions(app.extensions["archive"].catalog, session_secret(config),
                                          config.session_idle_seconds, config.session_max_seconds)
    failures = SigninFailures(app.extensions["archive"].catalog)
    app.extensions["login_failures"] = LoginFailures(
        RedisFailures(config.redis_url, failures) if config.redis_url else failures, config.login_failures_per_minute)
    app.extensions["transcode_limits"] = TranscodeLimits.of(config)

    from . import cors
    from .retrieve.rendered_rs import ThumbnailCache

    app.extensions["thumbnails"] = ThumbnailCache(config.thumbnail_cache_bytes)
    worklist = Worklist(app.extensions["archive"].catalog, config.worklist_queued_events)
    app.extensions["worklist"] = worklist
    app.extensions["worklist_bell"] = Bell(worklist, config.worklist_poll_seconds, config.redis_url or None)
    app.extensions["worklist_channels"] = threading.BoundedSemaphore(config.worklist_channels)
    routes.register(app, config.url_prefix)

    content_policy.install(app)   # every answer: nosniff, and a sandbox unless it is a page of ours
    cors.install(app, config.cors_origins)   # preflights are answered before authentication…
    capabilities.install(app, config.url_prefix)   # …and so is Retrieve Capabilities (OPTIONS)
    app.before_request(_authenticate)
    _register_error_handlers(app)

    app.wsgi_app = _FromProxies(app.wsgi_app, config.trusted_proxies, config.proxy_addresses)
    app.wsgi_app = AuditMiddleware(app.wsgi_app, logging.getLogger("dicomweb.audit"))
    app.wsgi_app = Handover(app.wsgi_app)   # outermost: blob spans reach the socket unread
    return app


class _FromProxies:
    """X-Forwarded-For, -Proto, -Host and -Port believed (``hops`` of them, werkzeug's ProxyFix)
    only from a socket peer among the proxy addresses: a client reaching the app directly
    cannot name the host its URLs are built with, or pass for nginx. X-Forwarded-Prefix is
    never believed (nginx clears it too); a prefix is DICOMWEB_PUBLIC_URL's. A client reaching
    the app directly with a Host that names no port (dicomweb-client sends it so) connected to
    the socket's port: URLs handed back name that port (``with_socket_port``)."""

    def __init__(self, app, hops: int, addresses: tuple[str, ...]) -> None:  # noqa: ANN001
        self.plain, self.addresses = app, addresses
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=0) if hops else app

    def __call__(self, environ: dict, start_response):  # noqa: ANN204
        environ[SOCKET_PEER_ENVIRON_KEY] = environ.get("REMOTE_ADDR")
        trusted = self.fixed is not self.plain and in_networks(environ.get("REMOTE_ADDR"), self.addresses)
        if trusted:
            return self.fixed(environ, start_response)
        host = environ.get("HTTP_HOST")
        if host:
            environ["HTTP_HOST"] = with_socket_port(host, environ.get("SERVER_PORT"), environ.get("wsgi.url_scheme"))
        return self.plain(environ, start_response)


def with_socket_port(host: str, port: str | None, scheme: str | None) -> str:
    """``host`` with the port the client connected to when it names none and that port is not
    the scheme's default (HTTP/1.1 takes a Host without port to mean the default)."""
    named = host.rsplit("]", 1)[-1] if host.startswith("[") else host   # an IPv6 literal holds colons
    if ":" in named or not port or not port.isdigit() or int(port) == (443 if scheme == "https" else 80):
        return host
    return f"{host}:{int(port)}"


PUBLIC = routes.public_endpoints()   # the route table's: the API description reads the same
PERMISSION_OF = routes.endpoint_permissions()


def _authenticate() -> None:
    """Every request but the public ones (health, the API description, people's pages) names a
    known peer: by its key in Authorization, or, from the viewer's own pages, by a person's
    session cookie (service.viewer.session_person). Unless authentication is off."""
    config: Config = current_app.config["DICOMWEB"]
    request.environ[TRANSACTION_ENVIRON_KEY] = request.blueprint
    if not config.auth_enabled or request.endpoint in PUBLIC:
        return
    peers = current_app.extensions["peers"].current()
    header = request.headers.get("Authorization")
    if header:
        peer, credentials = identify(peers, presented_key(header)), "key"
    else:
        peer, credentials = viewer.session_person(peers), "session"
    if peer is None:
        raise Unauthorized("a valid API key is required in the Authorization header",
                           {"WWW-Authenticate": CHALLENGE})
    request.environ[PEER_ENVIRON_KEY] = peer.name
    request.environ[PERMISSIONS_ENVIRON_KEY] = ",".join(sorted(peer.permissions))
    request.environ[CREDENTIALS_ENVIRON_KEY] = credentials
    needed = PERMISSION_OF.get(request.endpoint) or required_permission(request.method)
    if needed not in peer.permissions:
        raise Forbidden(f"peer {peer.name} has no {needed} permission (the peers file gives it: "
                        f"'<name> <sha256> {','.join(sorted(peer.permissions | {needed}))}')")


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DicomWebError)
    def dicomweb_error(exc: DicomWebError) -> Any:
        response = jsonify(error=exc.title, message=exc.message)
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(QueryError)
    def query_error(exc: QueryError) -> Any:   # a search the catalog cannot run as asked: the peer's to mend
        return dicomweb_error(BadRequest(str(exc)))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        response = jsonify(error=exc.name, message=exc.description)
        response.status_code = exc.code or 500
        for name, value in exc.get_response().headers.items():
            if name.lower() in ("allow", "www-authenticate"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        metrics.UNEXPECTED.labels(request.blueprint or "other").inc()
        response = jsonify(error="Internal Server Error", message="the server failed to handle the request")
        response.status_code = 500
        return response
