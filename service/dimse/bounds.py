"""What one peer may cost the listener, enforced where pynetdicom would otherwise take it all.

This is the one module that reaches into pynetdicom's internals (its socket reads, its DIMSE
message decoding, its server's accept loop); each reach is a small wrapper around pynetdicom's
own code, kept here so that an upgrade of pynetdicom has one place to check.

- A PDU is read whole into memory once its header declares its length: a declared length past
  the bound closes the connection before any of it is read (``bound_pdu_reads``).
- A DIMSE message is assembled from any number of PDUs: its command set and a C-FIND/C-MOVE
  identifier are bounded in memory (past the bound: A-ABORT); a C-STORE data set is written to
  a file as it arrives, bounded in bytes: past the bound the rest is read and dropped, and the
  request is answered 0xA700 naming the bound, the association going on (``bound_messages``).
- Connections are bounded before a thread is given to them, a TLS handshake happens in the
  connection's own thread within the ACSE timeout (never in the accept loop), and a file left by
  an association that ended in the middle of a data set is removed (``BoundedServer``,
  ``connection_closed``).
- pynetdicom's C-GET and C-MOVE take only data sets held whole in memory: an instance a handler
  yields (``retrieve.InstanceToSend``) is sent from a file instead, in fragments, in a syntax the
  receiving association accepted (``send_instances_from_files``).
- Its network timeout counts only what is received: our answers count too
  (``answers_count_as_activity``), so that a long C-MOVE is not aborted when it ends.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from .. import metrics
from .retrieve import InstanceToSend, NotSendable

log = logging.getLogger(__name__)

MIN_PDU_BOUND = 1 << 16   # an A-ASSOCIATE-RQ of many presentation contexts is some KiB; P-DATA is ours to bound


@dataclass
class MessageBounds:
    command_bytes: int = 64 << 10         # a command set is some hundred bytes
    identifier_bytes: int = 1 << 20       # a C-FIND identifier, an N-ACTION's data set…
    dataset_bytes: int = 8 << 30          # one C-STORE data set: DICOMWEB_MAX_REQUEST_BYTES, as one STOW part


BOUNDS = MessageBounds()
OVERSIZED = "oversized"   # the mark on a C-STORE's data set file whose data set passed the bound


def bound_pdu_reads(limit: int) -> None:
    """pynetdicom reads a PDU's declared length whole, into memory, before it looks at it: a peer
    declaring 4 GiB would be read into 4 GiB. Its socket's reads are bounded here: a PDU longer
    than ``limit`` bytes closes the connection (pynetdicom then sees the PDU cut short and ends
    the association), before anything is read."""
    if getattr(AssociationSocket.recv, "bounded_to", None) == limit:
        return
    plain = getattr(AssociationSocket.recv, "plain", AssociationSocket.recv)

    def recv(self, nr_bytes: int) -> bytearray:  # noqa: ANN001
        if nr_bytes > limit:
            log.warning("DIMSE: a PDU of %d bytes declared by %s, more than the %d taken: connection closed",
                        nr_bytes, getattr(self.assoc, "requestor", None) and self.assoc.requestor.address, limit)
            metrics.DIMSE_REFUSED.labels("pdu-too-large").inc()
            self.close()
            return bytearray()
        received = plain(self, nr_bytes)
        if self.socket is not None:
            # ACK at once what came: a peer that writes a request as two segments without
            # TCP_NODELAY (pynetdicom's SCU) holds the second until the first is ACKed, and a
            # delayed ACK made every C-FIND 40 ms longer (measured: docs/benchmarks.md).
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except (OSError, AttributeError):   # not Linux, or the socket already gone
                pass
        return received

    recv.bounded_to, recv.plain = limit, plain
    AssociationSocket.recv = recv


def bound_messages(bounds: MessageBounds) -> None:
    """Bound what a DIMSE message may hold as its fragments arrive (see the module's text)."""
    BOUNDS.command_bytes, BOUNDS.identifier_bytes, BOUNDS.dataset_bytes = (
        bounds.command_bytes, bounds.identifier_bytes, bounds.dataset_bytes)
    if getattr(DIMSEMessage.decode_msg, "plain", None) is not None:
        return
    plain = DIMSEMessage.decode_msg

    def decode_msg(self, primitive, assoc=None) -> bool:  # noqa: ANN001
        if primitive.__class__ is not P_DATA or primitive is None:
            return plain(self, primitive, assoc)
        for context_id, data in primitive.presentation_data_value_list:
            # One fragment at a time: a C-STORE's file exists once its command set is decoded,
            # which may be in the same P-DATA as its first data fragment.
            data = _bounded_fragment(self, data, assoc)
            if data is None:
                return False
            one = P_DATA()
            one.presentation_data_value_list = [[context_id, data]]
            if plain(self, one, assoc):
                return True
        return False

    decode_msg.plain = plain
    DIMSEMessage.decode_msg = decode_msg


def _bounded_fragment(message: DIMSEMessage, data: bytes, assoc) -> bytes | None:  # noqa: ANN001
    """The fragment to decode; only its header once its data set passed the bound; None once the
    association is being aborted."""
    if getattr(message, "_aborting", False):
        return None
    is_command = data[0] & 1
    counter = "_command_received" if is_command else "_data_received"
    received = getattr(message, counter, 0) + len(data) - 1
    setattr(message, counter, received)
    stored_to = getattr(message, "_data_set_file", None)
    if is_command:
        limit, what = BOUNDS.command_bytes, "command-set"
    elif stored_to is not None:
        if received > BOUNDS.dataset_bytes:
            if not getattr(stored_to, OVERSIZED, False):
                log.warning("DIMSE: a C-STORE data set from %s passed %d bytes (DICOMWEB_MAX_REQUEST_BYTES): the "
                            "rest is dropped and the request refused", _peer_of(assoc), BOUNDS.dataset_bytes)
                setattr(stored_to, OVERSIZED, True)
                metrics.DIMSE_REFUSED.labels("dataset-too-large").inc()
                stored_to.truncate(0)
            return data[:1]
        return data
    else:
        limit, what = BOUNDS.identifier_bytes, "identifier"
    if received > limit:
        log.warning("DIMSE: the %s of a message from %s passed %d bytes: association aborted", what, _peer_of(assoc),
                    limit)
        metrics.DIMSE_REFUSED.labels(f"{what}-too-large").inc()
        message._aborting = True
        if assoc is not None:
            assoc.dul.event_queue.put("Evt19")   # as pynetdicom does for a message it cannot decode: A-ABORT
        return None
    return data


def _peer_of(assoc) -> str:  # noqa: ANN001
    requestor = getattr(assoc, "requestor", None)
    return f"{requestor.ae_title.strip()}@{requestor.address}" if requestor is not None else "?"


def connection_closed(event) -> None:  # noqa: ANN001 - EVT_CONN_CLOSE
    """What a connection that closed leaves: an acceptor still waiting for the association request
    (pynetdicom waits the whole ACSE timeout, holding a thread and a connection slot, though the
    peer is gone: woken as its timeout would); the file of a data set it was in the middle of."""
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)   # read as "no request came": the acceptor ends
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    stored_to = getattr(message, "_data_set_file", None)
    if stored_to is not None:
        stored_to.close()
        try:
            os.unlink(stored_to.name)
        except FileNotFoundError:
            pass


class WholeAssociation(RequestHandler):
    """pynetdicom's request handler returns as soon as the association's own thread is started;
    this one returns when it ends, so that the server's count of open connections is true."""

    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()


class BoundedServer(ThreadedAssociationServer):
    """pynetdicom's server with at most ``max_connections`` connections at once (counted before
    a thread is given to one: the others are closed at once), and TLS handshakes done in the
    connection's thread within ``handshake_seconds``. Made with ``request_handler=WholeAssociation``."""

    max_connections = 16
    handshake_seconds = 30.0
    daemon_threads = True   # stop() aborts the associations; their threads are not waited for at exit

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self._open = 0
        self._count_lock = threading.Lock()
        self._last_refusal_logged = 0.0
        super().__init__(*args, **kwargs)

    @property
    def open_connections(self) -> int:
        return self._open

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # a response is one small PDU: no Nagle wait
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request, client_address) -> bool:  # noqa: ANN001
        with self._count_lock:
            if self._open >= self.max_connections:
                refused = True
            else:
                self._open += 1
                refused = False
        if refused:
            metrics.DIMSE_REFUSED.labels("too-many-connections").inc()
            now = time.monotonic()
            if now - self._last_refusal_logged > 10:
                self._last_refusal_logged = now
                log.warning("DIMSE: %d connections open (DICOMWEB_DIMSE_MAX_ASSOCIATIONS): %s refused, and "
                            "others for the next 10 s are not logged", self._open, client_address[0])
            return False
        metrics.DIMSE_CONNECTIONS.inc()
        return True

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            if self.ssl_context:
                timeout = request.gettimeout()
                request.settimeout(self.handshake_seconds)
                try:
                    request.do_handshake()
                except OSError as exc:   # ssl.SSLError is an OSError, and so is a timeout
                    log.warning("DIMSE: TLS handshake with %s failed: %s", client_address[0], exc)
                    metrics.DIMSE_REFUSED.labels("tls-handshake").inc()
                    self.shutdown_request(request)
                    return
                request.settimeout(timeout)
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._open -= 1
            metrics.DIMSE_CONNECTIONS.dec()


def send_instances_from_files() -> None:
    """``Association.send_c_store`` given an ``InstanceToSend`` (by pynetdicom's C-GET and C-MOVE
    service classes, on the requestor's association or the one to the move destination): the
    instance is made into a file in a syntax that association accepted for its class and sent from
    it in fragments. A failure of the data's (NotSendable) is a failed sub-operation, logged; any
    other exception is a defect, logged with its traceback (pynetdicom counts it failed too)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    if getattr(Association.send_c_store, "plain", None) is not None:
        return
    plain = Association.send_c_store

    def send_c_store(self, dataset, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not isinstance(dataset, InstanceToSend):
            return plain(self, dataset, *args, **kwargs)
        accepted = [cx.transfer_syntax[0] for cx in self.accepted_contexts
                    if cx.abstract_syntax == dataset.SOPClassUID and cx.transfer_syntax]
        try:
            with dataset.file_for(accepted) as prepared:
                answered = plain(self, prepared.path, *args, **kwargs)
                dataset.store_status = getattr(answered, "Status", None)
                return answered
        except NotSendable as exc:
            log.warning("DIMSE: %s", exc)
            raise
        except Exception:
            log.exception("DIMSE: sending %s failed: a defect", dataset.SOPInstanceUID)
            raise

    send_c_store.plain = plain
    Association.send_c_store = send_c_store


def answers_count_as_activity() -> None:
    """pynetdicom's network timeout counts from the last PDU received: a requestor that waits
    quietly while we answer a long C-MOVE/C-GET/C-FIND (minutes for a large study) was aborted
    once the operation ended, after DICOMWEB_DIMSE_TIMEOUT. Each DIMSE message we send restarts
    the count too: only an association on which nothing moves either way is idle."""
    if getattr(DIMSEServiceProvider.send_msg, "plain", None) is not None:
        return
    plain = DIMSEServiceProvider.send_msg

    def send_msg(self, primitive, context_id: int) -> None:  # noqa: ANN001
        plain(self, primitive, context_id)
        timer = getattr(self.dul, "_idle_timer", None)
        if timer is not None:
            timer.restart()

    send_msg.plain = plain
    DIMSEServiceProvider.send_msg = send_msg
