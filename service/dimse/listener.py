"""The DIMSE listener: pynetdicom's association server, with our handlers for Verification,
Storage (C-STORE into the same ingest as STOW-RS) and Query (C-FIND over the same search as
QIDO-RS). Peers are AE titles with permissions (DICOMWEB_DIMSE_PEERS); an association from a
calling AE title not among them is rejected (calling AE title not recognised).

A received data set is written by pynetdicom to a file in the spool directory as its fragments
arrive (never held whole in memory) and stored from there; the success status is sent only once
its blob and catalog row are durable (StoreBatch.commit).
"""
from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
from typing import Iterator

from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.transport import AssociationSocket
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind, Verification,
    _STORAGE_CLASSES,
)

from storage import Archive
from transcode.syntaxes import TRANSFER_SYNTAXES

from ..config import AePeer, Config
from ..search.qido_response import ResultFormat
from .find import BadIdentifier, answer, find_query

log = logging.getLogger(__name__)
audit = logging.getLogger("dicomweb.audit")

NOT_AUTHORIZED = 0x0124           # Refused: Not Authorized (PS3.7 C.4.1.1.4 and the general statuses)
SUCCESS, PENDING, PENDING_UNSUPPORTED, CANCELED = 0x0000, 0xFF00, 0xFF01, 0xFE00
NOBODY = "-NO-PEERS-"             # the calling title required when DICOMWEB_DIMSE_PEERS names none
FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)


class Listener:
    """The association server of one node, bound to ``config.dimse_bind``."""

    def __init__(self, config: Config, archive: Archive) -> None:
        self.config, self.archive = config, archive
        self.peers: dict[str, AePeer] = {peer.ae_title: peer for peer in config.dimse_peers}
        self.server = None
        self._tempdir: str | None = None

    def application_entity(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.dimse_ae_title)
        ae.maximum_pdu_size = config.dimse_max_pdu
        ae.maximum_associations = config.dimse_max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.dimse_timeout
        # pynetdicom takes an empty list as "any title": with no peer, only a title no peer has
        ae.require_calling_aet = sorted(self.peers) or [NOBODY]
        syntaxes = sorted(TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        for sop_class in _STORAGE_CLASSES.values():
            ae.add_supported_context(sop_class, syntaxes)
        for model in FIND_MODELS:
            ae.add_supported_context(model)
        return ae

    def start(self, block: bool = False):  # noqa: ANN201 - pynetdicom's ThreadedAssociationServer, or None when blocking
        """Listen; with ``block``, until the process is stopped."""
        bound_pdu_reads(max(self.config.dimse_max_pdu, MIN_PDU_BOUND))
        host, _, port = self.config.dimse_bind.rpartition(":")
        # A received data set is written to a file as it arrives, in our spool (pynetdicom's files go
        # to the process's temporary directory: the listener's own process, so this is its own).
        _config.STORE_RECV_CHUNKED_DATASET = True
        self.config.spool_dir.mkdir(parents=True, exist_ok=True)
        self._tempdir, tempfile.tempdir = tempfile.tempdir, str(self.config.spool_dir)
        handlers = [(evt.EVT_C_ECHO, self.echo), (evt.EVT_C_STORE, self.store), (evt.EVT_C_FIND, self.find)]
        ae = self.application_entity()
        log.info("DIMSE listener %s on %s, %d peer(s) known", self.config.dimse_ae_title, self.config.dimse_bind,
                 len(self.peers))
        self.server = ae.start_server((host or "0.0.0.0", int(port)), block=block, evt_handlers=handlers)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            tempfile.tempdir = self._tempdir   # the process's own again (a listener run inside tests)

    # -- who may do what --------------------------------------------------------------------

    def _peer(self, event) -> AePeer | None:  # noqa: ANN001 - a pynetdicom Event
        return self.peers.get(event.assoc.requestor.ae_title.strip())

    def _audit(self, event, operation: str, status: int, started: float, **more) -> None:  # noqa: ANN001
        requestor = event.assoc.requestor
        audit.info(json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f".{int(started % 1 * 1000):03d}Z",
            "peer": requestor.ae_title.strip(), "credentials": "ae-title", "remote": requestor.address,
            "operation": operation, "status": f"0x{status:04X}", **more,
            "duration_ms": round((time.time() - started) * 1000, 1)}, separators=(",", ":")))

    # -- the services ---------------------------------------------------------------------------

    def echo(self, event) -> int:  # noqa: ANN001
        self._audit(event, "c_echo", SUCCESS, time.time())
        return SUCCESS

    def store(self, event) -> int:  # noqa: ANN001
        """C-STORE (PS3.4 B.2.2): the instance stored as STOW-RS stores it, its status Annex B's."""
        started = time.time()
        peer = self._peer(event)
        sop_instance = str(event.request.AffectedSOPInstanceUID or "")
        if peer is None or "store" not in peer.permissions:
            self._audit(event, "c_store", NOT_AUTHORIZED, started, instance=sop_instance)
            return NOT_AUTHORIZED
        with open(event.dataset_path, "rb") as fp:
            batch = self.archive.batch(may_replace="replace" in peer.permissions)
            batch.add(fp)
            [outcome] = batch.commit()
        status = SUCCESS if outcome.stored else int(outcome.failure)
        if not outcome.stored:
            log.warning("C-STORE of %s from %s refused (0x%04X): %s", sop_instance, peer.ae_title, status,
                        outcome.message)
        self._audit(event, "c_store", status, started, instance=sop_instance, study=outcome.study_uid)
        return status

    def find(self, event) -> Iterator[tuple[int, Dataset | None]]:  # noqa: ANN001
        """C-FIND (PS3.4 C.4.1): one pending response a match, made as the catalog's rows are read;
        C-CANCEL honoured between them."""
        started = time.time()
        peer = self._peer(event)
        if peer is None or "read" not in peer.permissions:
            self._audit(event, "c_find", NOT_AUTHORIZED, started)
            yield NOT_AUTHORIZED, None
            return
        identifier = event.identifier
        try:
            found = find_query(identifier, self.config.qido_max_results)
        except BadIdentifier as exc:
            self._audit(event, "c_find", exc.status, started, reason=str(exc))
            yield exc.status, None
            return
        rows, _ = self.archive.search(found.query)
        to_json = ResultFormat(found.query.returned(), found.level, "")
        pending = PENDING_UNSUPPORTED if found.unsupported else PENDING
        matches = 0
        for row in rows:
            if event.is_cancelled:
                self._audit(event, "c_find", CANCELED, started, level=found.level, matches=matches)
                yield CANCELED, None
                return
            matches += 1
            yield pending, answer(identifier, to_json(row), found, self.config.dimse_ae_title)
        self._audit(event, "c_find", SUCCESS, started, level=found.level, matches=matches)
        yield SUCCESS, None


MIN_PDU_BOUND = 1 << 16   # an A-ASSOCIATE-RQ of many presentation contexts is some KiB; P-DATA is ours to bound


def bound_pdu_reads(limit: int) -> None:
    """pynetdicom reads a PDU's declared length whole, into memory, before it looks at it: a peer
    declaring 4 GiB would be read into 4 GiB. Its socket's reads are bounded here (the one place
    pynetdicom's internals are touched): a PDU longer than ``limit`` bytes closes the connection
    (pynetdicom then sees the PDU cut short and ends the association), before anything is read."""
    if getattr(AssociationSocket.recv, "bounded_to", None) == limit:
        return
    plain = getattr(AssociationSocket.recv, "plain", AssociationSocket.recv)

    def recv(self, nr_bytes: int) -> bytearray:  # noqa: ANN001
        if nr_bytes > limit:
            log.warning("DIMSE: a PDU of %d bytes declared by %s, more than the %d taken: connection closed",
                        nr_bytes, getattr(self.assoc, "requestor", None) and self.assoc.requestor.address, limit)
            self.close()
            return bytearray()
        return plain(self, nr_bytes)

    recv.bounded_to, recv.plain = limit, plain
    AssociationSocket.recv = recv


def serve(config: Config, archive: Archive) -> None:
    """The listener in the foreground until SIGTERM or SIGINT (``dicomweb dimse``)."""
    listener = Listener(config, archive)
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    listener.start(block=False)
    try:
        stop.wait()
    finally:
        listener.stop()
