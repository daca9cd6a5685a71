"""The DIMSE listener: pynetdicom's association server, with our handlers for Verification,
Storage (C-STORE into the same ingest as STOW-RS) and Query (C-FIND over the same search as
QIDO-RS). Peers are AE titles with permissions (DICOMWEB_DIMSE_PEERS); an association from a
calling AE title not among them is rejected (calling AE title not recognised).

A received data set is written by pynetdicom to a file in the spool directory as its fragments
arrive (never held whole in memory, bounded in size: service.dimse.bounds) and stored from there;
the success status is sent only once its blob and catalog row are durable (StoreBatch.commit).
DICOM TLS, where configured, is a second port of the same listener.
"""
from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import tempfile
import threading
import time
from typing import Iterator

from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import build_context
from pynetdicom.status import STATUS_FAILURE, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove, Verification,
    _STORAGE_CLASSES,
)

from storage import Archive
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES

from .. import metrics
from ..config import AePeer, Config
from ..limits import TranscodeLimits
from ..search.qido_params import parse_query
from ..search.qido_response import ResultFormat
from .bounds import MIN_PDU_BOUND, OVERSIZED, BoundedServer, MessageBounds, WholeAssociation, bound_messages, \
    answers_count_as_activity, bound_pdu_reads, connection_closed, send_instances_from_files
from .find import BadIdentifier, answer, find_query
from .retrieve import Sender, requested_instances
from .peers import AePeerSource

log = logging.getLogger(__name__)
audit = logging.getLogger("dicomweb.audit")

NOT_AUTHORIZED = 0x0124           # Refused: Not Authorized (PS3.7 C.4.1.1.4 and the general statuses)
OUT_OF_RESOURCES = 0xA700         # Refused: Out of Resources (PS3.4 B.2.3): here, a data set past the bound
SUCCESS, PENDING, PENDING_UNSUPPORTED, CANCELED = 0x0000, 0xFF00, 0xFF01, 0xFE00
NOBODY = "-NO-PEERS-"             # the calling title required when DICOMWEB_DIMSE_PEERS names none
FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
RETRIEVE_MODELS = {PatientRootQueryRetrieveInformationModelGet: "patient", StudyRootQueryRetrieveInformationModelGet: "study",
                   PatientRootQueryRetrieveInformationModelMove: "patient", StudyRootQueryRetrieveInformationModelMove: "study"}
MAX_CONTEXTS = 128                # presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255)


class Listener:
    """The association server of one node, bound to ``config.dimse_bind`` (and, with DICOM TLS,
    ``config.dimse_tls_bind``)."""

    def __init__(self, config: Config, archive: Archive) -> None:
        self.config, self.archive = config, archive
        self.peer_source = AePeerSource(config.dimse_peers, config.dimse_peers_file, config.peers_recheck_seconds)
        self.sender = Sender(archive, TranscodeLimits.of(config), str(config.spool_dir))
        self.servers: list[BoundedServer] = []
        self._ae: AE | None = None
        self._tempdir: str | None = None

    @property
    def peers(self) -> dict[str, AePeer]:
        return self.peer_source.current()

    def application_entity(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.dimse_ae_title)
        ae.maximum_pdu_size = config.dimse_max_pdu
        ae.maximum_associations = config.dimse_max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.dimse_timeout
        self._require_known_titles(ae)
        syntaxes = sorted(TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        for sop_class in _STORAGE_CLASSES.values():
            # Either role: a modality's C-STORE to us, and our C-STOREs to a C-GET requestor
            # (which proposes the storage SCP role for itself, PS3.7 D.3.3.4).
            ae.add_supported_context(sop_class, syntaxes, scu_role=True, scp_role=True)
        for model in (*FIND_MODELS, *RETRIEVE_MODELS):
            ae.add_supported_context(model)
        return ae

    def _require_known_titles(self, ae: AE) -> None:
        # pynetdicom takes an empty list as "any title": with no peer, only a title no peer has
        ae.require_calling_aet = sorted(self.peers) or [NOBODY]

    def start(self) -> list[BoundedServer]:
        """Listen, in threads of this process, until ``stop``."""
        config = self.config
        bound_pdu_reads(max(config.dimse_max_pdu, MIN_PDU_BOUND))
        bound_messages(MessageBounds(dataset_bytes=config.max_request_bytes))
        # A received data set is written to a file as it arrives, in our spool (pynetdicom's files go
        # to the process's temporary directory: the listener's own process, so this is its own).
        _config.STORE_RECV_CHUNKED_DATASET = True
        config.spool_dir.mkdir(parents=True, exist_ok=True)
        self._tempdir, tempfile.tempdir = tempfile.tempdir, str(config.spool_dir)
        self._ae = ae = self.application_entity()
        send_instances_from_files()
        answers_count_as_activity()
        handlers = [(evt.EVT_C_ECHO, self.echo), (evt.EVT_C_STORE, self.store), (evt.EVT_C_FIND, self.find),
                    (evt.EVT_C_GET, self.get), (evt.EVT_C_MOVE, self.move),
                    (evt.EVT_CONN_OPEN, self._connection_opened), (evt.EVT_CONN_CLOSE, connection_closed),
                    (evt.EVT_ACCEPTED, self._counted("accepted")), (evt.EVT_REJECTED, self._counted("rejected"))]
        binds = [(config.dimse_bind, None)] if config.dimse_bind else []
        if config.dimse_tls_bind:
            binds.append((config.dimse_tls_bind, tls_context(config)))
        for bind, context in binds:
            host, _, port = bind.rpartition(":")
            server = ae.make_server((host.strip("[]") or "0.0.0.0", int(port)), ssl_context=context,
                                    evt_handlers=handlers, server_class=BoundedServer,
                                    request_handler=WholeAssociation)
            ae._servers.append(server)   # as start_server does: its shutdown takes it out again
            server.max_connections = config.dimse_max_associations
            server.handshake_seconds = config.dimse_timeout
            threading.Thread(target=server.serve_forever, name=f"dimse-{bind}", daemon=True).start()
            self.servers.append(server)
            log.info("DIMSE listener %s on %s%s, %d peer(s) known", config.dimse_ae_title, bind,
                     " (DICOM TLS)" if context else "", len(self.peers))
        return self.servers

    def stop(self) -> None:
        for server in self.servers:
            for assoc in server.active_associations:   # what is under way ends (A-ABORT): not acknowledged
                assoc.abort()
            server.shutdown()
        self.servers = []
        if self._ae is not None:   # started: the process's own temporary directory again (a listener run inside tests)
            tempfile.tempdir, self._ae = self._tempdir, None

    def _connection_opened(self, event) -> None:  # noqa: ANN001 - EVT_CONN_OPEN
        # Before the association is negotiated: the peers file's changes take effect here.
        if self._ae is not None:
            self._require_known_titles(self._ae)

    @staticmethod
    def _counted(result: str):  # noqa: ANN205
        def count(event) -> None:  # noqa: ANN001
            metrics.DIMSE_ASSOCIATIONS.labels(result).inc()
        return count

    # -- who may do what --------------------------------------------------------------------

    def _peer(self, event) -> AePeer | None:  # noqa: ANN001 - a pynetdicom Event
        return self.peers.get(event.assoc.requestor.ae_title.strip())

    def _audit(self, event, operation: str, status: int, started: float, **more) -> None:  # noqa: ANN001
        requestor = event.assoc.requestor
        metrics.DIMSE_OPERATIONS.labels(operation, f"0x{status:04X}").inc()
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
        if getattr(event.request._dataset_file, OVERSIZED, False):
            self._audit(event, "c_store", OUT_OF_RESOURCES, started, instance=sop_instance)
            status = Dataset()
            status.Status = OUT_OF_RESOURCES
            status.ErrorComment = f"data set over {self.config.max_request_bytes} bytes (DICOMWEB_MAX_REQUEST_BYTES)"
            return status
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

    # -- retrieve -------------------------------------------------------------------------------

    def _retrieve(self, event, operation: str):  # noqa: ANN001, ANN202
        """The instances a C-GET/C-MOVE asks for, as items to send; or the status refusing it."""
        peer = self._peer(event)
        if peer is None or "read" not in peer.permissions:
            return NOT_AUTHORIZED, None
        try:
            found = requested_instances(self.archive, event.identifier, RETRIEVE_MODELS[event.context.abstract_syntax],
                                        self._studies_of_patient)
        except BadIdentifier as exc:
            log.info("%s from %s refused (0x%04X): %s", operation, peer.ae_title, exc.status, exc)
            return exc.status, None
        return SUCCESS, found

    def _studies_of_patient(self, patient_id: str) -> list[str]:
        query, _ = parse_query("study", [("PatientID", patient_id), ("includefield", "StudyInstanceUID")],
                               self.config.qido_max_results)
        rows, _ = self.archive.search(query)
        return [row["0020000D"]["Value"][0] for row in (ResultFormat(query.returned(), "study", "")(r) for r in rows)]

    def _sent(self, event, operation: str, found: list, started: float):  # noqa: ANN001, ANN202
        """The sub-operations of a retrieve, one pending (status, instance) each; C-CANCEL
        honoured between them."""
        yield len(found)
        items = self.sender.items(found)
        for done, item in enumerate(items):
            if event.is_cancelled:
                self._audit(event, operation, CANCELED, started, instances=len(found), sent=done)
                yield CANCELED, None
                return
            yield PENDING, item
        # pynetdicom asks once more after the last sub-operation: the receiver's answers are known
        kinds = [STORAGE_SERVICE_CLASS_STATUS.get(item.store_status, (STATUS_FAILURE,))[0] for item in items]
        failed, warned = kinds.count(STATUS_FAILURE), kinds.count(STATUS_WARNING)
        status = SUCCESS if not failed and not warned else 0xA702 if failed == len(items) else 0xB000
        self._audit(event, operation, status, started, instances=len(found), failed=failed, warnings=warned)

    def get(self, event):  # noqa: ANN001, ANN201
        """C-GET (PS3.4 C.4.3): the instances sent on the requestor's own association."""
        started = time.time()
        status, found = self._retrieve(event, "c_get")
        if found is None:
            self._audit(event, "c_get", status, started)
            yield 1
            yield status, None
            return
        yield from self._sent(event, "c_get", found, started)

    def move(self, event):  # noqa: ANN001, ANN201
        """C-MOVE (PS3.4 C.4.2): the instances sent over a new association to the Move Destination,
        which must be a known AE with an address (else 0xA801)."""
        started = time.time()
        destination = self.peers.get(str(event.move_destination or "").strip())
        status, found = self._retrieve(event, "c_move")
        if destination is None:
            self._audit(event, "c_move", 0xA801, started, destination=str(event.move_destination)[:16])
            yield None, None
            return
        # pynetdicom associates with the destination before it reads a refusal: Verification alone then
        contexts = _contexts_for(found) if found else [build_context(Verification)]
        yield destination.host, destination.port, {"contexts": contexts,
                                                   "evt_handlers": [(evt.EVT_CONN_OPEN, _without_nagle)]}
        if found is None:
            self._audit(event, "c_move", status, started, destination=destination.ae_title)
            yield 1
            yield status, None
            return
        yield from self._sent(event, "c_move", found, started)


def _without_nagle(event) -> None:  # noqa: ANN001 - EVT_CONN_OPEN of the association to a move destination
    # The tail of each PDU would wait for the ACK of the one before (Nagle), which the receiver delays.
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _contexts_for(instances: list) -> list:
    """The presentation contexts a move destination is asked for: one for each SOP class and
    stored syntax, offering it as stored, then Explicit and Implicit VR Little Endian."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for instance in instances:
        stored = instance.transfer_syntax_uid
        wanted.setdefault((instance.sop_class_uid, stored),
                          list(dict.fromkeys([stored, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])))
    if len(wanted) > MAX_CONTEXTS:
        log.warning("C-MOVE: %d SOP class and syntax pairs, more than the %d contexts of one association: "
                    "the instances of the others will fail", len(wanted), MAX_CONTEXTS)
    return [build_context(sop_class, syntaxes) for (sop_class, _), syntaxes in list(wanted.items())[:MAX_CONTEXTS]]


def tls_context(config: Config) -> ssl.SSLContext:
    """DICOM TLS as PS3.15 B.9 (BCP 195) asks: TLS 1.2 or later, our certificate, and the peer's
    certificate required and checked against the operator's CA (mutual authentication)."""
    if not (config.dimse_tls_cert and config.dimse_tls_key and config.dimse_tls_ca):
        raise ValueError("DICOMWEB_DIMSE_TLS_BIND needs DICOMWEB_DIMSE_TLS_CERT, DICOMWEB_DIMSE_TLS_KEY and "
                         "DICOMWEB_DIMSE_TLS_CA (the CA of the peers' certificates)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.dimse_tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(config.dimse_tls_cert, config.dimse_tls_key)
    return context


def serve(config: Config, archive: Archive) -> None:
    """The listener in the foreground until SIGTERM or SIGINT (``dicomweb dimse``)."""
    listener = Listener(config, archive)
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    listener.start()
    try:
        stop.wait()
    finally:
        listener.stop()
        metrics.process_ended(config.prometheus_multiproc_dir)
