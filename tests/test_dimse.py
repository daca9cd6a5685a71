"""The DIMSE listener (service.dimse) with pynetdicom as the SCU, in process: C-ECHO, C-STORE
into the same archive STOW-RS stores into (seen at once by QIDO-RS and WADO-RS, and the other way),
C-FIND over the same search as QIDO-RS, and what peers may and may not do."""
from __future__ import annotations

import copy
import io
import socket
import time
from contextlib import contextmanager

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from service import create_app
from service.config import AePeer, Peer, hash_key
from service.dimse.listener import Listener
from testbed.messages import multipart_body, stow_headers
from testbed.server import free_port
from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, PEER, TEST_FILES, make_config

MODALITY, VIEWER, STRANGER = "MODALITY1", "VIEWER", "STRANGER"


@pytest.fixture
def node(tmp_path, catalog_url):
    """The app and a listener over one archive, as one node runs them."""
    port = free_port()
    config = make_config(tmp_path, catalog_url=catalog_url, dimse_bind=f"127.0.0.1:{port}",
                         peers=(Peer(PEER, hash_key(API_KEY), frozenset({"read", "store"})),),
                         dimse_peers=(AePeer(MODALITY, "127.0.0.1", 104, frozenset({"store"})),
                                      AePeer(VIEWER, "127.0.0.1", 105, frozenset({"read"}))))
    app = create_app(config)
    listener = Listener(config, app.extensions["archive"])
    listener.start()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    yield client, port
    listener.stop()


def associate(port: int, calling: str, *contexts):  # noqa: ANN001, ANN201
    ae = AE(ae_title=calling)
    for context, syntaxes in contexts:
        ae.add_requested_context(context, syntaxes)
    return ae.associate("127.0.0.1", port, ae_title="DICOMWEB")


def test_echo_and_an_unknown_calling_ae_title_is_rejected(node):
    _, port = node
    assoc = associate(port, VIEWER, (Verification, [ExplicitVRLittleEndian]))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    stranger = associate(port, STRANGER, (Verification, [ExplicitVRLittleEndian]))
    assert stranger.is_rejected   # A-ASSOCIATE-RJ: calling AE title not recognised


def test_c_store_goes_into_the_archive_stow_rs_reads(node):
    client, port = node
    study, series = generate_uid(), generate_uid()
    data = ct_instance(study, series, rows=32, columns=32)
    ds = pydicom.dcmread(io.BytesIO(data))
    assoc = associate(port, MODALITY, (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    [found] = client.get(f"/dicom-web/studies?StudyInstanceUID={study}").get_json()
    assert found["00201208"]["Value"] == [1]
    r = client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}/frames/1",
                   headers={"Accept": "application/octet-stream"})
    assert ds.PixelData in r.data


def test_c_store_keeps_compressed_data_as_sent(node):
    client, port = node
    ds = pydicom.dcmread(TEST_FILES / "MR_small_jpeg_ls_lossless.dcm")
    assoc = associate(port, MODALITY, (ds.SOPClassUID, [JPEGLSLossless]))
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    [model] = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata").get_json()
    assert model["00083002"]["Value"] == [JPEGLSLossless]


def test_c_store_failures_have_annex_b_statuses_and_the_association_goes_on(node):
    _, port = node
    ds = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)))
    assoc = associate(port, MODALITY, (CTImageStorage, [ExplicitVRLittleEndian]))
    damaged = copy.deepcopy(ds)
    del damaged.StudyInstanceUID
    assert assoc.send_c_store(damaged).Status == 0xA900   # no Study Instance UID: does not match the class
    assert assoc.send_c_store(ds).Status == 0x0000       # the same association goes on
    ds.PatientName = "Other^Content"
    assert assoc.send_c_store(ds).Status == 0x0111       # the same SOP Instance UID, other content
    assoc.release()


def test_a_peer_without_store_cannot_store(node):
    client, port = node
    ds = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)))
    assoc = associate(port, VIEWER, (CTImageStorage, [ExplicitVRLittleEndian]))
    assert assoc.send_c_store(ds).Status == 0x0124   # Refused: Not Authorized
    assoc.release()
    assert client.get(f"/dicom-web/studies?StudyInstanceUID={ds.StudyInstanceUID}").get_json() == []


def _find(port: int, calling: str, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    assoc = associate(port, calling, (StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]))
    answers = [(status.Status, found) for status, found in
               assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)]
    assoc.release()
    return answers


def test_c_find_finds_what_qido_rs_finds(node):
    client, port = node
    studies = []
    for n, (name, date) in enumerate([("Doe^Jane", "20240115"), ("Doe^John", "20240620"), ("Roe^Ann", "20230101")]):
        study = generate_uid()
        client.post("/dicom-web/studies", headers=stow_headers(), data=multipart_body([
            ct_instance(study, generate_uid(), rows=8, columns=8, patient_name=name, patient_id=f"P{n}",
                        StudyDate=date, AccessionNumber=f"A{n}")]))
        studies.append(study)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "Doe*"
    query.StudyDate = "20240101-20241231"
    query.StudyInstanceUID = ""
    query.AccessionNumber = ""
    query.NumberOfStudyRelatedInstances = ""
    answers = _find(port, VIEWER, query)
    assert [status for status, _ in answers] == [0xFF00, 0xFF00, 0x0000]
    found = {str(ds.StudyInstanceUID): ds for _, ds in answers[:2]}
    qido = client.get("/dicom-web/studies?PatientName=Doe*&StudyDate=20240101-20241231").get_json()
    assert set(found) == {row["0020000D"]["Value"][0] for row in qido} == set(studies[:2])
    for ds in found.values():
        assert set(ds.dir()) == {"AccessionNumber", "NumberOfStudyRelatedInstances", "PatientName", "QueryRetrieveLevel",
                                 "RetrieveAETitle", "SpecificCharacterSet", "StudyDate", "StudyInstanceUID"}
        assert ds.NumberOfStudyRelatedInstances == 1 and ds.RetrieveAETitle == "DICOMWEB"
    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.StudyInstanceUID = studies[2]
    series.SeriesInstanceUID = ""
    series.Modality = ""
    [(pending, one), (done, _)] = _find(port, VIEWER, series)
    assert (pending, done) == (0xFF00, 0x0000) and one.Modality == "CT"


def test_c_find_refusals(node):
    _, port = node
    bad = Dataset()
    bad.QueryRetrieveLevel = "FOLDER"
    assert _find(port, VIEWER, bad) == [(0xA900, None)]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assert _find(port, MODALITY, query) == [(0x0124, None)]   # the modality may store, not read


def test_with_no_peer_every_association_is_rejected(tmp_path):
    """pynetdicom takes an empty list of calling titles as "any": the listener does not."""
    port = free_port()
    config = make_config(tmp_path, dimse_bind=f"127.0.0.1:{port}")
    listener = Listener(config, create_app(config).extensions["archive"])
    listener.start()
    try:
        assert associate(port, "ANYONE", (Verification, [ExplicitVRLittleEndian])).is_rejected
    finally:
        listener.stop()


@pytest.mark.parametrize("sent", [
    b"\x01\x00\xff\xff\xff\xff" + b"x" * 65536,           # an A-ASSOCIATE-RQ declaring 4 GiB, then data
    b"\x04\x00\x7f\xff\xff\xff" + b"x" * 65536,           # a P-DATA-TF declaring 2 GiB
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                 # garbage: not a PDU
])
def test_hostile_bytes_cost_a_bound_and_the_listener_goes_on(node, sent):
    """pynetdicom would read a declared PDU length whole into memory: a length beyond the bound
    closes the connection before anything is read; garbage is aborted (A-ABORT); the listener keeps
    serving."""
    import socket
    import time

    _, port = node
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    try:
        connection.sendall(sent)
        answer = b""
        while not answer.startswith(b"\x07"):   # the server closes it, or aborts (A-ABORT) and waits for us to
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        connection.close()
    assert time.monotonic() - started < 5
    assoc = associate(port, VIEWER, (Verification, [ExplicitVRLittleEndian]))
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()


# -- bounds, peers, TLS ---------------------------------------------------------------------------

@contextmanager
def listening(tmp_path, **overrides):  # noqa: ANN001, ANN201
    """A node on SQLite with the test's settings: its HTTP client, port and listener."""
    port = free_port()
    values = dict(dimse_bind=f"127.0.0.1:{port}", peers=(Peer(PEER, hash_key(API_KEY), frozenset({"read", "store"})),),
                  dimse_peers=(AePeer(MODALITY, "127.0.0.1", 104, frozenset({"store", "read"})),))
    values.update(overrides)
    config = make_config(tmp_path, **values)
    app = create_app(config)
    listener = Listener(config, app.extensions["archive"])
    listener.start()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    try:
        yield client, port, listener
    finally:
        listener.stop()


def spooled_files(tmp_path) -> list:  # noqa: ANN001
    spool = make_config(tmp_path).spool_dir
    return sorted(p.name for p in spool.glob("*.dcm")) if spool.exists() else []


def test_a_data_set_past_the_bound_is_refused_0xa700_and_the_association_goes_on(tmp_path):
    with listening(tmp_path, max_request_bytes=200_000) as (client, port, _):
        big = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=512, columns=512)))
        small = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)))
        assoc = associate(port, MODALITY, (CTImageStorage, [ExplicitVRLittleEndian]))
        refused = assoc.send_c_store(big)
        assert refused.Status == 0xA700 and "DICOMWEB_MAX_REQUEST_BYTES" in refused.ErrorComment
        assert assoc.send_c_store(small).Status == 0x0000   # the association goes on
        assoc.release()
        assert client.get(f"/dicom-web/studies?StudyInstanceUID={big.StudyInstanceUID}").get_json() == []
        assert len(client.get(f"/dicom-web/studies?StudyInstanceUID={small.StudyInstanceUID}").get_json()) == 1
    assert spooled_files(tmp_path) == []


def test_an_association_ended_in_the_middle_of_a_data_set_leaves_no_file(tmp_path):
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    with listening(tmp_path) as (client, port, _):
        ds = pydicom.dcmread(io.BytesIO(ct_instance(generate_uid(), generate_uid(), rows=256, columns=256)))
        assoc = associate(port, MODALITY, (CTImageStorage, [ExplicitVRLittleEndian]))
        request = C_STORE()
        request.MessageID, request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = 1, CTImageStorage, ds.SOPInstanceUID
        request.Priority = 2
        buffer = io.BytesIO()
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
        request.DataSet = io.BytesIO(buffer.getvalue())
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        fragments = list(message.encode_msg(assoc.accepted_contexts[0].context_id, 16384))
        for fragment in fragments[:len(fragments) // 2]:   # half of the data set, then gone
            assoc.dul.send_pdu(fragment)
        deadline = time.monotonic() + 5
        while not spooled_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spooled_files(tmp_path), "the data set was being received into a file"
        assoc.abort()
        deadline = time.monotonic() + 5
        while spooled_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spooled_files(tmp_path) == []
        assert client.get(f"/dicom-web/studies?StudyInstanceUID={ds.StudyInstanceUID}").get_json() == []


def test_an_identifier_past_its_bound_aborts_the_association(tmp_path):
    with listening(tmp_path) as (_, port, _listener):
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientName = "x" * (2 << 20)
        assoc = associate(port, MODALITY, (StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian]))
        answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert all(not status for status, _ in answers)   # no status: the listener aborted
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
        again = associate(port, MODALITY, (Verification, [ExplicitVRLittleEndian]))
        assert again.send_c_echo().Status == 0x0000
        again.release()


def test_connections_are_bounded_and_one_that_never_speaks_is_cut(tmp_path):
    """Two connections at most; a third is closed at once, before a thread is given to it; one
    that sends nothing is closed within the ACSE timeout; then associations are served again."""
    with listening(tmp_path, dimse_max_associations=2, dimse_timeout=3.0) as (_, port, listener):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        deadline = time.monotonic() + 5
        while listener.servers[0].open_connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = socket.create_connection(("127.0.0.1", port), timeout=5)
        started = time.monotonic()
        assert third.recv(1) == b"" and time.monotonic() - started < 1.5   # closed at once, not at the timeout
        third.close()
        for connection in idle:
            started = time.monotonic()
            try:
                connection.recv(100)   # the ARTIM timer (ACSE timeout): closed by the listener
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 6
            connection.close()
        deadline = time.monotonic() + 3
        while listener.servers[0].open_connections and time.monotonic() < deadline:   # their threads end
            time.sleep(0.02)
        assoc = associate(port, MODALITY, (Verification, [ExplicitVRLittleEndian]))
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_the_ae_peers_file_takes_effect_without_a_restart(tmp_path):
    from click.testing import CliRunner

    from service.cli import main

    peers_file = tmp_path / "ae-peers"
    environment = {"DICOMWEB_DATA_DIR": str(tmp_path / "var"), "DICOMWEB_DIMSE_PEERS_FILE": str(peers_file)}
    with listening(tmp_path, dimse_peers_file=peers_file, peers_recheck_seconds=0) as (_, port, listener):
        assert associate(port, "CT2", (Verification, [ExplicitVRLittleEndian])).is_rejected
        runner = CliRunner()
        added = runner.invoke(main, ["aes", "add", "CT2", "127.0.0.1:4006", "--permissions", "store"], env=environment)
        assert added.exit_code == 0, added.output
        assert peers_file.read_text() == "CT2@127.0.0.1:4006:store\n" and oct(peers_file.stat().st_mode)[-3:] == "600"
        assoc = associate(port, "CT2", (Verification, [ExplicitVRLittleEndian]))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        listed = runner.invoke(main, ["aes", "list"], env=environment)
        assert "CT2@127.0.0.1:4006:store" in listed.output
        assert runner.invoke(main, ["aes", "add", "CT2", "127.0.0.1:4007"], env=environment).exit_code == 2
        assert runner.invoke(main, ["aes", "add", "BAD\\TITLE", "127.0.0.1:4007"], env=environment).exit_code == 2
        assert runner.invoke(main, ["aes", "remove", "CT2"], env=environment).exit_code == 0
        assert associate(port, "CT2", (Verification, [ExplicitVRLittleEndian])).is_rejected
        assert runner.invoke(main, ["aes", "remove", "CT2"], env=environment).exit_code == 2


def test_ae_peers_file_lines_that_do_not_read_are_skipped_and_named():
    from service.config import parse_ae_peers_file

    peers, problems = parse_ae_peers_file("# comment\nCT1@10.0.0.5:104:store+worklist\nnot a peer\n"
                                          "CT1@10.0.0.6:104\nA@h:1,B@h:2\nUS1@[::1]:11112\n", "f")
    assert [(p.ae_title, p.host, p.port, sorted(p.permissions)) for p in peers] == [
        ("CT1", "10.0.0.5", 104, ["store", "worklist"]), ("US1", "::1", 11112, ["read", "store"])]
    assert [problem.split(":")[1] for problem in problems] == ["3", "4", "5"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from testbed.tls import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_client(pki, cert: bool = True):  # noqa: ANN001, ANN201
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(str(pki.peer_cert), str(pki.peer_key))
    return context


def test_dicom_tls_with_mutual_authentication(tmp_path, pki):
    """A second port under TLS: a peer with a certificate of the operator's CA is served; one
    without, or with another CA's, is refused in the handshake; a connection that never starts
    its handshake does not hold up the others (it is done in the connection's thread)."""
    tls_port = free_port()
    with listening(tmp_path, dimse_tls_bind=f"127.0.0.1:{tls_port}", dimse_tls_cert=str(pki.server_cert),
                   dimse_tls_key=str(pki.server_key), dimse_tls_ca=str(pki.ca), dimse_timeout=5.0) as (_, port, _l):
        silent = socket.create_connection(("127.0.0.1", tls_port), timeout=5)   # never says ClientHello
        ae = AE(ae_title=MODALITY)
        ae.add_requested_context(Verification, [ExplicitVRLittleEndian])
        started = time.monotonic()
        assoc = ae.associate("127.0.0.1", tls_port, ae_title="DICOMWEB", tls_args=(tls_client(pki), "localhost"))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assert time.monotonic() - started < 2
        assoc.release()
        silent.close()
        no_cert = tls_client(pki, cert=False)
        stranger = tls_client(pki, cert=False)
        stranger.load_cert_chain(str(pki.stranger_cert), str(pki.stranger_key))
        for context in (no_cert, stranger):
            refused = ae.associate("127.0.0.1", tls_port, ae_title="DICOMWEB", tls_args=(context, "localhost"))
            assert not refused.is_established
        plain = associate(port, MODALITY, (Verification, [ExplicitVRLittleEndian]))   # the plain port as before
        assert plain.send_c_echo().Status == 0x0000
        plain.release()


def test_a_connection_cut_before_its_association_request_gives_its_slot_back_at_once(tmp_path):
    """pynetdicom's acceptor waited the whole ACSE timeout for a request from a peer already gone."""
    with listening(tmp_path, dimse_timeout=60.0) as (_, port, listener):
        for sent in (b"\x04\x00\x7f\xff\xff\xff" + b"x" * 1024, b""):   # past the PDU bound; nothing at all
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(sent)
            connection.close()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and listener.servers[0].open_connections:
                time.sleep(0.02)
            assert listener.servers[0].open_connections == 0


# -- C-GET and C-MOVE ------------------------------------------------------------------------------

def _stow(client, *instances: bytes) -> None:  # noqa: ANN001
    r = client.post("/dicom-web/studies", headers=stow_headers(), data=multipart_body(list(instances)))
    assert r.status_code == 200, r.data


def _identifier(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _getter(port: int, contexts: dict, calling: str = MODALITY):  # noqa: ANN001, ANN202
    """A C-GET requestor taking the storage SCP role for ``contexts`` (SOP class → syntaxes); the
    instances it receives, as data sets, in the list returned."""
    from pynetdicom import build_role, evt as events
    from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet

    received: list = []

    def on_store(event):  # noqa: ANN001, ANN202
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMWEB", ext_neg=roles,
                         evt_handlers=[(events.EVT_C_STORE, on_store)])
    assert assoc.is_established
    return assoc, received


def test_c_get_sends_a_study_in_what_the_requestor_accepted(tmp_path):
    """As stored where accepted, decoded where only Explicit VR Little Endian is, recompressed to
    JPEG-LS where only that is; the pixels the same as stored."""
    from pydicom.uid import JPEGLSLossless
    from pynetdicom.sop_class import MRImageStorage, StudyRootQueryRetrieveInformationModelGet

    with listening(tmp_path) as (client, port, _):
        study, series = generate_uid(), generate_uid()
        cts = [ct_instance(study, series, number=n, rows=64, columns=64, seed=n) for n in range(1, 4)]
        _stow(client, *cts)
        jls = pydicom.dcmread(TEST_FILES / "MR_small_jpeg_ls_lossless.dcm")
        assoc = associate(port, MODALITY, (jls.SOPClassUID, [JPEGLSLossless]))
        assert assoc.send_c_store(jls).Status == 0x0000
        assoc.release()

        assoc, received = _getter(port, {CTImageStorage: [ExplicitVRLittleEndian]})
        statuses = [s for s, _ in assoc.send_c_get(_identifier("STUDY", StudyInstanceUID=study),
                                                    StudyRootQueryRetrieveInformationModelGet)]
        assoc.release()
        assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 3
        sent = {str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID): pydicom.dcmread(io.BytesIO(b)) for b in cts}
        assert {str(ds.SOPInstanceUID) for ds in received} == set(sent)
        for ds in received:
            assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData   # as stored: Explicit VR LE

        for syntaxes in ([ExplicitVRLittleEndian], [JPEGLSLossless], [ImplicitVRLittleEndian]):
            assoc, received = _getter(port, {MRImageStorage: syntaxes})
            [*_, (final, _)] = assoc.send_c_get(_identifier("STUDY", StudyInstanceUID=jls.StudyInstanceUID),
                                                StudyRootQueryRetrieveInformationModelGet)
            assoc.release()
            assert final.Status == 0x0000, syntaxes
            [got] = received
            assert got.file_meta.TransferSyntaxUID == syntaxes[0]
            assert (got.pixel_array == jls.pixel_array).all()


def test_c_get_at_each_level_and_its_refusals(tmp_path):
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
    )

    with listening(tmp_path, dimse_peers=(AePeer(MODALITY, "127.0.0.1", 104, frozenset({"read"})),
                                          AePeer(STRANGER, "127.0.0.1", 105, frozenset({"store"})))) as (client, port, _):
        study, series, other = generate_uid(), generate_uid(), generate_uid()
        data = [ct_instance(study, series, number=n, rows=8, columns=8, patient_id="PAT-GET") for n in (1, 2)]
        data.append(ct_instance(study, other, number=3, rows=8, columns=8, patient_id="PAT-GET"))
        _stow(client, *data)
        uids = [str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID) for b in data]

        def get(identifier, model=StudyRootQueryRetrieveInformationModelGet, calling=MODALITY):  # noqa: ANN001, ANN202
            assoc, received = _getter(port, {CTImageStorage: [ExplicitVRLittleEndian]}, calling)
            [*_, (final, failed)] = assoc.send_c_get(identifier, model)
            assoc.release()
            return final.Status, sorted(str(ds.SOPInstanceUID) for ds in received)

        assert get(_identifier("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series)) == (0, sorted(uids[:2]))
        assert get(_identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series,
                               SOPInstanceUID=uids[1])) == (0, [uids[1]])
        assert get(_identifier("PATIENT", PatientID="PAT-GET"), PatientRootQueryRetrieveInformationModelGet) == (
            0, sorted(uids))
        assert get(_identifier("SERIES", SeriesInstanceUID=series))[0] == 0xA900     # the study's UID missing
        assert get(_identifier("PATIENT", PatientID="PAT-GET"))[0] == 0xA900         # not a level of Study Root
        assert get(_identifier("STUDY", StudyInstanceUID=study), calling=STRANGER) == (0x0124, [])
        assert get(_identifier("STUDY", StudyInstanceUID=generate_uid())) == (0, [])   # nothing: no sub-operation


def test_c_get_an_instance_the_requestor_cannot_take_is_a_failed_sub_operation(tmp_path):
    from pydicom.uid import MPEG2MPML
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    with listening(tmp_path) as (client, port, _):
        study = generate_uid()
        data = ct_instance(study, generate_uid(), rows=8, columns=8)
        _stow(client, data)
        assoc, received = _getter(port, {CTImageStorage: [MPEG2MPML]})
        [*_, (final, failed)] = assoc.send_c_get(_identifier("STUDY", StudyInstanceUID=study),
                                                 StudyRootQueryRetrieveInformationModelGet)
        assoc.release()
        assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 1 and received == []
        assert failed.FailedSOPInstanceUIDList == str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    assert spooled_files(tmp_path) == []


def test_c_move_to_a_known_destination_and_refusals(tmp_path):
    from pynetdicom import evt as events
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    received: list = []
    destination = AE(ae_title="DEST")
    destination.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    destination.add_supported_context(Verification)   # as storage SCPs do (a refusal is sent after an echo-only association)
    dest_port = free_port()
    server = destination.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[
        (events.EVT_C_STORE, lambda event: received.append((event.dataset, event.assoc.requestor.ae_title)) or 0)])
    peers = (AePeer(VIEWER, "127.0.0.1", 105, frozenset({"read"})), AePeer("DEST", "127.0.0.1", dest_port,
                                                                            frozenset({"store"})),
             AePeer(MODALITY, "127.0.0.1", 104, frozenset({"store"})))
    try:
        with listening(tmp_path, dimse_peers=peers) as (client, port, _):
            study = generate_uid()
            data = [ct_instance(study, generate_uid(), number=n, rows=16, columns=16, seed=n) for n in (1, 2)]
            _stow(client, *data)

            def move(to: str, calling: str = VIEWER) -> int:
                assoc = associate(port, calling, (StudyRootQueryRetrieveInformationModelMove, [ExplicitVRLittleEndian]))
                [*_, (final, _)] = assoc.send_c_move(_identifier("STUDY", StudyInstanceUID=study), to,
                                                     StudyRootQueryRetrieveInformationModelMove)
                assoc.release()
                return final.Status

            assert move("DEST") == 0x0000
            assert sorted(str(ds.SOPInstanceUID) for ds, _ in received) == sorted(
                str(pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID) for b in data)
            assert {title for _, title in received} == {"DICOMWEB"}
            assert move("NOWHERE") == 0xA801        # not a known AE
            assert move("DEST", calling=MODALITY) == 0x0124   # the modality may store, not read
            assert len(received) == 2
    finally:
        server.shutdown()


def test_the_syntax_an_instance_is_sent_in():
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    from service.dimse.retrieve import syntax_for

    anything, nothing = (lambda syntax: True), (lambda syntax: False)
    assert syntax_for(JPEGLSLossless, [ImplicitVRLittleEndian, JPEGLSLossless], anything) == JPEGLSLossless  # as stored
    assert syntax_for(JPEGLSLossless, [ImplicitVRLittleEndian, ExplicitVRLittleEndian], anything) == ExplicitVRLittleEndian
    assert syntax_for(ExplicitVRLittleEndian, [JPEG2000Lossless], anything) == JPEG2000Lossless       # recompressed
    assert syntax_for(ExplicitVRLittleEndian, [JPEG2000Lossless], nothing) is None
    assert syntax_for(JPEGLSLossless, [], anything) is None


def test_a_c_move_longer_than_the_network_timeout_goes_on(tmp_path):
    """The requestor of a C-MOVE sends nothing while the sub-operations go to the destination:
    pynetdicom counted that as silence and aborted a move longer than DICOMWEB_DIMSE_TIMEOUT."""
    from pynetdicom import evt as events
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    def slow(event):  # noqa: ANN001, ANN202
        time.sleep(0.4)
        return 0x0000

    destination = AE(ae_title="SLOWDEST")
    destination.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    dest_port = free_port()
    server = destination.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[(events.EVT_C_STORE, slow)])
    peers = (AePeer(VIEWER, "127.0.0.1", 105, frozenset({"read"})), AePeer("SLOWDEST", "127.0.0.1", dest_port))
    try:
        with listening(tmp_path, dimse_peers=peers, dimse_timeout=1.0) as (client, port, _):
            study = generate_uid()
            _stow(client, *[ct_instance(study, generate_uid(), number=n, rows=8, columns=8) for n in range(1, 6)])
            assoc = associate(port, VIEWER, (StudyRootQueryRetrieveInformationModelMove, [ExplicitVRLittleEndian]))
            [*_, (final, _)] = assoc.send_c_move(_identifier("STUDY", StudyInstanceUID=study), "SLOWDEST",
                                                 StudyRootQueryRetrieveInformationModelMove)
            assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 5
            time.sleep(0.1)   # pynetdicom's reactor looks at its timer once the move is answered
            assoc.release()
            assert assoc.is_released and not assoc.is_aborted   # it aborted once the move was answered
    finally:
        server.shutdown()


def test_c_cancel_ends_a_c_get_between_instances(tmp_path):
    from pynetdicom import build_role, evt as events
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    with listening(tmp_path) as (client, port, _):
        study = generate_uid()
        _stow(client, *[ct_instance(study, generate_uid(), number=n, rows=8, columns=8) for n in range(1, 7)])
        received = []
        ae = AE(ae_title=MODALITY)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])

        def on_store(event):  # noqa: ANN001, ANN202
            received.append(event.request.AffectedSOPInstanceUID)
            if len(received) == 2:   # C-CANCEL of the C-GET (message ID 1) from the requestor
                context = next(cx for cx in event.assoc.accepted_contexts
                               if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
                event.assoc.send_c_cancel(1, context.context_id)
            return 0x0000

        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMWEB", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(events.EVT_C_STORE, on_store)])
        [*_, (final, _)] = assoc.send_c_get(_identifier("STUDY", StudyInstanceUID=study),
                                            StudyRootQueryRetrieveInformationModelGet, msg_id=1)
        assoc.release()
        assert final.Status == 0xFE00 and 2 <= len(received) < 6
