"""The event channel (PS3.18 §8.10.4, §8.10.5): ``GET /subscribers/{aetitle}`` upgraded to a
WebSocket, over which the UPS event reports queued for that AE title are sent, in order, as
DICOM JSON text frames, and deleted once sent. Reports queued while no channel is open wait
(the newest ``DICOMWEB_WORKLIST_QUEUED_EVENTS`` of them) and go out when one opens.

A channel holds one request thread of its worker while it is open (gunicorn's threaded
workers), so a worker opens at most ``DICOMWEB_WORKLIST_CHANNELS`` of them and answers 503
beyond: the other threads stay for requests. It sleeps on the process's ``Bell``, which a
commit in the same process rings at once and a listener thread rings for the others:
PostgreSQL LISTEN (any node), Redis SUBSCRIBE where DICOMWEB_REDIS_URL is set, or polling
the events table (the embedded default).
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import time
import uuid
from typing import Callable

import orjson
import simple_websocket
from flask import Response, current_app, request
from simple_websocket.errors import ConnectionClosed

from storage.worklist import NOTIFY_CHANNEL, TitleTaken, Worklist

from ..auth import PEER_ENVIRON_KEY
from ..handover import WEBSOCKET_ENVIRON_KEY
from ..errors import BadRequest, Forbidden, ServiceUnavailable, UpgradeRequired
from . import ae_title, ups, worklist

log = logging.getLogger(__name__)

MAX_UNREAD_MESSAGES = 16     # what a subscriber may send us unread (nothing is asked of it) before it is cut off
MAX_MESSAGE_BYTES = 4096
PING_SECONDS = 20            # keeps proxies from closing an idle channel, and finds dead peers
CHECK_SECONDS = 5            # an idle channel looks at the catalog this often whatever the bell says
ALIVE_SECONDS = 3600         # an open channel says it is alive this often (the sweep forgets titles unseen for days)
REPLACED = 4000              # close code: a newer channel took the AE title
REDIS_CHANNEL = NOTIFY_CHANNEL


class Bell:
    """Wakes this process's event channels when events may be waiting. ``ring`` is called after
    a commit that queued some; a listener thread, started by the first channel of the process,
    rings for commits elsewhere."""

    def __init__(self, worklist: Worklist, poll_seconds: float, redis_url: str | None = None) -> None:
        self.worklist, self.poll_seconds, self.redis_url = worklist, poll_seconds, redis_url
        self._condition = threading.Condition()
        self._count = 0
        self._listener: threading.Thread | None = None
        self._pid = self._redis_pid = 0
        self._redis = None

    def ring(self, local_only: bool = False) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()
        if self.redis_url and not local_only:
            try:
                self._redis_client().publish(REDIS_CHANNEL, b"")
            except Exception:   # noqa: BLE001 - Redis down: the others find the events at their next check
                log.warning("could not publish a worklist wake-up to Redis", exc_info=True)

    def wait(self, seen: int, timeout: float) -> int:
        """Block until a ring after ``seen`` (or ``timeout``); the count to pass next time."""
        self._start()
        with self._condition:
            self._condition.wait_for(lambda: self._count != seen, timeout)
            return self._count

    @property
    def count(self) -> int:
        return self._count

    def _redis_client(self):  # noqa: ANN202
        import redis   # only where DICOMWEB_REDIS_URL is set

        if self._redis is None or self._redis_pid != os.getpid():   # one client a process, made after fork
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._redis_pid = os.getpid()
        return self._redis

    def _start(self) -> None:
        if self._listener is not None and self._pid == os.getpid() and self._listener.is_alive():
            return
        with self._condition:
            if self._listener is None or self._pid != os.getpid() or not self._listener.is_alive():
                self._pid = os.getpid()   # after a fork: this process's own listener
                self._listener = threading.Thread(target=self._listen, name="worklist-bell", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        while True:
            try:
                if self.redis_url:
                    self._listen_redis()
                elif not self.worklist.catalog.is_sqlite:
                    self._listen_postgresql()
                else:
                    self._poll()
            except Exception:   # noqa: BLE001 - a lost connection: poll a while, then listen again
                log.warning("the worklist listener lost its connection; retrying", exc_info=True)
                time.sleep(1)

    def _poll(self, seconds: float = float("inf")) -> None:
        # The first look rings too, as LISTEN does: an event committed after a channel's look at
        # the catalog and before this first look would otherwise be the baseline, unrung.
        last, until = object(), time.monotonic() + seconds
        while time.monotonic() < until:
            latest = self.worklist.latest_event()
            if latest != last:
                self.ring(local_only=True)
                last = latest
            time.sleep(self.poll_seconds)

    def _listen_postgresql(self) -> None:
        import psycopg

        url = self.worklist.catalog.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.ring(local_only=True)   # what was committed before LISTEN
            while True:
                for _ in conn.notifies(timeout=CHECK_SECONDS, stop_after=1):
                    self.ring(local_only=True)

    def _listen_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=CHECK_SECONDS + 1)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(REDIS_CHANNEL)
        self.ring(local_only=True)
        while True:
            if pubsub.get_message(timeout=CHECK_SECONDS) is not None:
                self.ring(local_only=True)


def rung() -> None:
    """After a commit that queued events: wake the channels (this process's at once)."""
    current_app.extensions["worklist_bell"].ring()


def channel_url(base_url: str, ae_title: str) -> str:
    """The WebSocket URL of an AE title's event channel."""
    scheme, sep, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}{sep}{rest}/subscribers/{ae_title}"


class _EventSocket(simple_websocket.Server):
    """A server socket that bounds what the peer sends it: nothing is read from an event
    channel, so a subscriber that keeps sending is cut off rather than buffered."""

    def _handle_events(self) -> bool:
        keep_going = super()._handle_events()
        if len(self.input_buffer) > MAX_UNREAD_MESSAGES:
            self.input_buffer.clear()
            try:
                self.close(1008, "an event channel takes no messages")
            except ConnectionClosed:
                pass
            return False
        return keep_going


def check_handshake(version: str | None, key: str | None) -> None:
    """An opening handshake a WebSocket server can answer (RFC 6455 §4.2.1): version 13, else
    426 naming it (§4.4); a key of 16 bytes in base64, else 400. Checked before the channel
    takes the AE title or a thread."""
    if (version or "").strip() != "13":
        raise UpgradeRequired(f"Sec-WebSocket-Version {(version or 'missing')[:20]!r}: this server speaks "
                              "WebSocket version 13 (RFC 6455)", {"Sec-WebSocket-Version": "13", "Upgrade": "websocket"})
    try:
        decoded = base64.b64decode((key or "").strip(), validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != 16:
        raise BadRequest("Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 §4.1)")


def upgrade_required(subscriber: str) -> Response:
    """GET /subscribers/{aetitle} without ``Upgrade: websocket``."""
    raise UpgradeRequired("the event channel is a WebSocket: ask with Upgrade: websocket (RFC 6455)",
                          {"Upgrade": "websocket"})


def open_channel(subscriber: str) -> Response:
    """GET /subscribers/{aetitle} with ``Upgrade: websocket``: the channel, until it closes."""
    title = ae_title(subscriber)
    check_handshake(request.headers.get("Sec-WebSocket-Version"), request.headers.get("Sec-WebSocket-Key"))
    if "gunicorn.socket" not in request.environ and "werkzeug.socket" not in request.environ:
        raise BadRequest("this server cannot take the connection over for a WebSocket")
    slots: threading.BoundedSemaphore = current_app.extensions["worklist_channels"]
    if not slots.acquire(blocking=False):
        limit = current_app.config["DICOMWEB"].worklist_channels
        raise ServiceUnavailable(f"this worker has its {limit} event channels open (DICOMWEB_WORKLIST_CHANNELS); "
                                 "try again, or reach another worker", {"Retry-After": "5"})
    try:
        channel = uuid.uuid4().hex
        try:
            worklist().open_channel(title, request.environ.get(PEER_ENVIRON_KEY) or "", channel)
        except TitleTaken:
            raise Forbidden(f"the AE title {title} belongs to another peer's subscriptions") from None
        # Compression is not negotiated: a peer's deflated frames could inflate past any bound.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        socket = _EventSocket(request.environ, ping_interval=PING_SECONDS, max_message_size=MAX_MESSAGE_BYTES)
        request.environ[WEBSOCKET_ENVIRON_KEY] = True
        deliver(socket, worklist(), current_app.extensions["worklist_bell"], title, channel)
    finally:
        slots.release()
    return Response(status=101)


def deliver(socket: simple_websocket.Server, worklist: Worklist, bell: Bell, title: str, channel: str,
            clock: Callable[[], float] = time.monotonic) -> None:
    """Send what waits for ``title``, in order, and then each event as it comes, until the peer
    goes, or a newer channel takes the AE title (closed with code 4000)."""
    seen, message_id, checked, alive = bell.count, 0, 0.0, clock()
    try:
        while socket.connected:
            while socket.receive(timeout=0) is not None:   # what the peer sent: read, and not acted on
                pass
            waiting = worklist.waiting(title)
            for event in waiting:
                message_id += 1
                socket.send(orjson.dumps(ups.event_report(event.event_type, event.workitem_uid or ups.GLOBAL_SUBSCRIPTION,
                                                          event.information, message_id)).decode())
            if waiting:
                worklist.sent(title, [event.pk for event in waiting])
                continue
            if clock() - checked >= CHECK_SECONDS:
                checked = clock()
                if worklist.channel_of(title) != channel:
                    socket.close(REPLACED, "a newer event channel took this AE title")
                    return
                if checked - alive >= ALIVE_SECONDS:
                    alive = checked
                    worklist.channel_alive(title, channel)
            before = seen
            seen = bell.wait(seen, 1.0)
            while seen == before and socket.connected and clock() - checked < CHECK_SECONDS:
                seen = bell.wait(seen, 1.0)
    except (ConnectionClosed, OSError):   # the peer gone; OSError: simple-websocket's reader closed the socket
        pass                              # between our look at it and our send (EBADF)
    finally:
        worklist.channel_alive(title, channel, closed=True)
        if socket.connected:
            try:
                socket.close()
            except ConnectionClosed:
                pass
