"""Viewer sessions: a person signs in with their own key once and the browser then holds a
cookie instead — Flask-free; ``service.viewer`` sets and reads the cookie.

The cookie holds a random token, signed with the server's session secret (shared by the nodes)
so that a forged or altered cookie is refused before the catalog is asked. The catalog keeps the
token's SHA-256 (a copy of the catalog opens no session), the person, the digest of the key the
session was opened with, and when it began and was last used. A session is good while it is
younger than the absolute limit, was used within the idle limit, was not signed out, and its
person still holds that same key as a person's key: revoking or replacing the key ends it.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Iterable

from itsdangerous import BadSignature, Signer

from storage import Catalog

from .config import Peer

COOKIE = "dicomweb_session"
TOUCH_EVERY = 60.0   # seconds: how stale "last used" may get, so a busy viewer costs no write a request


class Sessions:
    def __init__(self, catalog: Catalog, secret: bytes, idle_seconds: float, max_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._catalog = catalog
        self._signer = Signer(secret, salt="dicomweb.viewer-session", digest_method=hashlib.sha256)
        self.idle_seconds, self.max_seconds = idle_seconds, max_seconds
        self._clock = clock

    def open(self, peer: Peer) -> str:
        """A new session of ``peer`` (a person's key); the cookie's value."""
        token = secrets.token_urlsafe(32)
        self._catalog.open_session(_digest(token), peer.name, peer.key_sha256.hex(), self._clock())
        return self._signer.sign(token).decode()

    def person(self, cookie: str | None, peers: Iterable[Peer]) -> Peer | None:
        """The person whose session ``cookie`` is, when it is still good; else None."""
        token = self._token(cookie)
        if token is None:
            return None
        row = self._catalog.session(_digest(token))
        now = self._clock()
        if (row is None or row.ended is not None or now - row.created > self.max_seconds
                or now - row.seen > self.idle_seconds):
            return None
        peer = next((p for p in peers if p.name == row.peer), None)
        if peer is None or not peer.person or not secrets.compare_digest(peer.key_sha256.hex(), row.key_sha256):
            return None
        if now - row.seen > min(TOUCH_EVERY, self.idle_seconds / 4):
            self._catalog.touch_session(_digest(token), now)
        return peer

    def end(self, cookie: str | None) -> None:
        """Sign out: the session is refused from now on, on every node."""
        token = self._token(cookie)
        if token is not None:
            self._catalog.end_session(_digest(token), self._clock())

    def _token(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > 200:
            return None
        try:
            return self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeDecodeError):
            return None


class LoginFailures:
    """Failed sign-ins of each client address over the last minute, in this worker process:
    past ``per_minute`` of them an address waits until the oldest is a minute old. At most
    ``max_addresses`` are remembered (the least recently failing forgotten first), so a flood
    from many addresses costs bounded memory."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 10_000) -> None:
        self.per_minute, self.max_addresses = per_minute, max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            while times and now - times[0] >= self.WINDOW:
                times.popleft()
            if not times or len(times) < self.per_minute:
                return 0.0
            return self.WINDOW - (now - times[0])

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=max(self.per_minute, 1))
            times.append(self._clock())
            self._failures[address] = times
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
