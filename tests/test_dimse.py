"""The DIMSE listener (service.dimse) with pynetdicom as the SCU, in process: C-ECHO, C-STORE
into the same archive STOW-RS stores into (seen at once by QIDO-RS and WADO-RS, and the other way),
C-FIND over the same search as QIDO-RS, and what peers may and may not do."""
from __future__ import annotations

import copy
import io

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
