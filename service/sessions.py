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
import logging
import os
import secrets
import time
from typing import Callable, Iterable, Protocol

from itsdangerous import BadSignature, Signer

from storage import Catalog

from .config import Peer

log = logging.getLogger(__name__)

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


class FailureCount(Protocol):
    """Where failed sign-ins are counted, seen by every worker: storage.signins.SigninFailures
    (the catalog), or RedisFailures."""

    def newest(self, address: str, since: float, limit: int) -> list[float]: ...

    def record(self, address: str, at: float, forget_before: float) -> None: ...


class LoginFailures:
    """Failed sign-ins of each client address over the last minute, counted where every worker
    process and node sees them: past ``per_minute`` of them an address waits until the oldest
    of its newest ``per_minute`` is a minute old."""

    WINDOW = 60.0

    def __init__(self, count: FailureCount, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.count, self.per_minute, self._clock = count, per_minute, clock

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        now = self._clock()
        newest = self.count.newest(address, now - self.WINDOW, max(self.per_minute, 1))
        if len(newest) < self.per_minute:
            return 0.0
        return max(0.0, self.WINDOW - (now - min(newest)))

    def failed(self, address: str) -> None:
        now = self._clock()
        self.count.record(address, now, now - self.WINDOW)


class RedisFailures:
    """Failed sign-ins in Redis (DICOMWEB_REDIS_URL): a sorted set of times an address, which
    expires a window after its last failure. Where Redis cannot be reached, the catalog counts."""

    def __init__(self, url: str, fallback: FailureCount, window: float = LoginFailures.WINDOW) -> None:
        self.url, self.fallback, self.window = url, fallback, window
        self._client, self._pid = None, 0

    def _redis(self):  # noqa: ANN202 - a redis.Redis, made once a process (after gunicorn forks)
        import redis

        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
            self._pid = os.getpid()
        return self._client

    @staticmethod
    def _key(address: str) -> str:
        return "dicomweb:signin-failures:" + hashlib.sha256(address.encode()).hexdigest()[:32]

    def newest(self, address: str, since: float, limit: int) -> list[float]:
        import redis

        try:
            found = self._redis().zrevrangebyscore(self._key(address), "+inf", f"({since}", start=0, num=limit,
                                                   withscores=True)
        except redis.RedisError:
            log.warning("Redis cannot be reached: sign-in failures are counted in the catalog")
            return self.fallback.newest(address, since, limit)
        return [score for _, score in found]

    def record(self, address: str, at: float, forget_before: float) -> None:
        import redis

        key = self._key(address)
        try:
            with self._redis().pipeline() as pipe:
                pipe.zadd(key, {f"{at}:{secrets.token_hex(4)}": at})
                pipe.zremrangebyscore(key, "-inf", f"({forget_before}")
                pipe.expire(key, int(self.window) + 1)
                pipe.execute()
        except redis.RedisError:
            log.warning("Redis cannot be reached: sign-in failures are counted in the catalog")
            self.fallback.record(address, at, forget_before)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
