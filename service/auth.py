"""API-key authentication of peer systems, and the audit record of every request.

Keys are accepted as ``Authorization: <key>``, ``ApiKey <key>`` or ``Bearer <key>``
and compared as SHA-256 digests in constant time against every configured peer,
so neither the key nor its length leaks through timing. Keys are never logged.
"""
from __future__ import annotations

import hmac
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

from . import metrics
from .config import Peer, WatchedFile, hash_key, read_peers

PEER_ENVIRON_KEY = "dicomweb.peer"
PERMISSIONS_ENVIRON_KEY = "dicomweb.permissions"   # the peer's, as "read,store"
CREDENTIALS_ENVIRON_KEY = "dicomweb.credentials"   # how the peer was known: "key", or "session" (a person's, in the viewer)
TRANSACTION_ENVIRON_KEY = "dicomweb.transaction"   # the blueprint that answered: stow_rs, qido_rs…
STUDY_ENVIRON_KEY = "dicomweb.study"
DELETED_ENVIRON_KEY = "dicomweb.deleted"           # instances a DELETE removed
SUBSCRIBER_ENVIRON_KEY = "dicomweb.subscriber"   # the UPS-RS AE title a request names
SOCKET_PEER_ENVIRON_KEY = "dicomweb.socket_peer"   # the address the connection came from, whatever it says
SCHEMES = ("apikey", "bearer")
log = logging.getLogger(__name__)
CHALLENGE = 'ApiKey realm="dicomweb", Bearer realm="dicomweb"'


def presented_key(header: str | None) -> str | None:
    """The key in an Authorization header value, without its scheme."""
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in SCHEMES:
        value = rest.strip()
    return value or None


class PeerSource:
    """The peers allowed in: those of the configuration, and those of the peers file, re-read
    when it changes (checked at most every ``recheck_seconds``), so `dicomweb keys add/revoke` take effect
    without a restart. Lines that cannot be read are skipped and reported (``problems``, in
    /ready and /metrics, and logged as errors); a file that cannot be read at all leaves the
    peers read before in force, reported the same way."""

    def __init__(self, static: Iterable[Peer], path: Path | None, recheck_seconds: float = 1.0) -> None:
        self.static, self.path = tuple(static), path
        self._file = WatchedFile(path, recheck_seconds)
        self._from_file: tuple[Peer, ...] = ()
        self.problems: tuple[str, ...] = ()
        self.current()

    def current(self) -> tuple[Peer, ...]:
        self._file.reload_if_changed(self._reload)
        return self.static + self._from_file

    def _reload(self) -> None:
        try:
            found = read_peers(self.path)
        except (OSError, UnicodeError) as exc:
            self.problems = (f"{self.path}: cannot be read ({exc}); the peers read before stay in force",)
        else:
            self._from_file, self.problems = found.peers, found.problems
        for problem in self.problems:
            log.error("peers file: %s", problem)
        metrics.PEERS_FILE_PROBLEMS.set(len(self.problems))


def identify(peers: Iterable[Peer], key: str | None) -> Peer | None:
    """The peer holding ``key``, or None."""
    if key is None:
        return None
    digest = hash_key(key)
    match = None
    for peer in peers:   # no early exit: every peer costs the same
        if hmac.compare_digest(peer.key_sha256, digest) and match is None:
            match = peer
    return match


def required_permission(method: str) -> str:
    """What a request needs: storing for POST (STOW-RS), deleting for DELETE, reading for the rest."""
    return {"POST": "store", "DELETE": "delete"}.get(method, "read")


class AuditMiddleware:
    """WSGI middleware writing one JSON line per request when its body is done.

    Wrapping the response iterable is what lets the line carry the bytes really
    sent for streamed answers, and log aborted downloads with what they got.
    """

    def __init__(self, app: Callable, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.time()
        state: dict = {"status": None}

        def capture(status: str, headers: list, exc_info=None):  # noqa: ANN001
            state["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        body = self.app(environ, capture)
        return _CountingBody(body, lambda sent, complete: self._record(environ, state, started, sent, complete),
                             lambda: _broken(environ))

    def _record(self, environ: dict, state: dict, started: float, sent: int, complete: bool) -> None:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f".{int(started % 1 * 1000):03d}Z",
            "peer": environ.get(PEER_ENVIRON_KEY),
            "permissions": environ.get(PERMISSIONS_ENVIRON_KEY),
            "credentials": environ.get(CREDENTIALS_ENVIRON_KEY),
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            "status": state["status"],
            "bytes_sent": sent,
            "complete": complete,
            "study": environ.get(STUDY_ENVIRON_KEY),
            **({"deleted": environ[DELETED_ENVIRON_KEY]} if DELETED_ENVIRON_KEY in environ else {}),
            **({"subscriber": environ[SUBSCRIBER_ENVIRON_KEY]} if SUBSCRIBER_ENVIRON_KEY in environ else {}),
            "upstream": environ.get("dicomweb.upstream"),
            "duration_ms": round((time.time() - started) * 1000, 1),
        }
        self.logger.info(json.dumps(record, separators=(",", ":")))
        metrics.observe(environ.get(TRANSACTION_ENVIRON_KEY), state["status"], sent, time.time() - started)


def _broken(environ: dict) -> None:
    log.exception("answer broken off after it started: %s %s", environ.get("REQUEST_METHOD"),
                  environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    metrics.UNEXPECTED.labels(environ.get(TRANSACTION_ENVIRON_KEY) or "other").inc()


class _CountingBody:
    def __init__(self, body: Iterable[bytes], on_close: Callable[[int, bool], None],
                 on_error: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._on_error = on_error
        self._sent = 0
        self._complete = False

    def __iter__(self):
        try:
            for chunk in self._body:
                self._sent += len(chunk)
                yield chunk
        except Exception:
            # The answer had started: all that can be done is to end it early, and count the defect.
            self._on_error()
            raise
        self._complete = True

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close(self._sent, self._complete)
