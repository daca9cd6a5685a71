"""The DIMSE listener as an operator runs it (``dicomweb dimse``, a process of its own beside
gunicorn, on one data directory, with a plain port and a DICOM TLS port), driven by DCMTK's
echoscu, storescu and findscu: independent peers. What a modality stores is at once what QIDO-RS
and WADO-RS give, pixel for pixel, and what STOW-RS stored is what findscu finds; gunicorn's
/ready and /metrics cover the listener (one PROMETHEUS_MULTIPROC_DIR, as make serve shares it)."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from testbed.messages import multipart_body, split_multipart, stow_headers
from testbed.server import ROOT, Server, free_port, stop_process
from testbed.synthetic import ct_instance
from testbed.tls import make_pki
from tests.conftest import API_KEY, TEST_FILES, require_command

AUTH = {"Authorization": f"ApiKey {API_KEY}"}


@pytest.fixture(scope="module")
def dcmtk():
    require_command("storescu", "dcmtk")


@pytest.fixture(scope="module")
def node(tmp_path_factory, dcmtk):
    """gunicorn and the DIMSE listener on one data directory, as `make serve` runs them."""
    work = tmp_path_factory.mktemp("dimse")
    pki = make_pki(work / "pki")
    port, tls_port, dest_port = free_port(), free_port(), free_port()
    (work / "metrics").mkdir()
    env = {"DICOMWEB_DATA_DIR": str(work), "DICOMWEB_API_KEY": API_KEY, "DICOMWEB_DIMSE_BIND": f"127.0.0.1:{port}",
           "DICOMWEB_DIMSE_PEERS": f"MODALITY1@127.0.0.1:11113:store,VIEWER@127.0.0.1:11114:read,"
                                   f"ARCHIVE2@127.0.0.1:{dest_port}:store",
           "DICOMWEB_DIMSE_TLS_BIND": f"127.0.0.1:{tls_port}", "DICOMWEB_DIMSE_TLS_CERT": str(pki.server_cert),
           "DICOMWEB_DIMSE_TLS_KEY": str(pki.server_key), "DICOMWEB_DIMSE_TLS_CA": str(pki.ca),
           "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics")}
    server = Server(env, free_port(), work / "gunicorn.log")
    log = open(work / "dimse.log", "wb")
    listener = subprocess.Popen([sys.executable, "-m", "service.cli", "dimse"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}, **env})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert listener.poll() is None, (work / "dimse.log").read_text()
            time.sleep(0.1)
    try:
        env["_DEST_PORT"] = str(dest_port)
        yield server, port, work, tls_port, pki, env
    finally:
        stop_process(listener, 10)
        log.close()
        server.stop()
        text = (work / "dimse.log").read_text()
        assert "Traceback" not in text, text[-3000:]
        assert listener.returncode == 0, text[-2000:]   # SIGTERM: a clean stop


def dcmtk_run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(arguments), capture_output=True, text=True, timeout=120)


def test_echoscu_and_a_stranger(node):
    _, port, *_ = node
    assert dcmtk_run("echoscu", "-aet", "VIEWER", "-aec", "DICOMWEB", "127.0.0.1", str(port)).returncode == 0
    refused = dcmtk_run("echoscu", "-aet", "STRANGER", "-aec", "DICOMWEB", "127.0.0.1", str(port))
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr + refused.stdout


def test_storescu_stores_what_wado_rs_and_qido_rs_give(node, tmp_path):
    server, port, *_ = node
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(3):
        path = tmp_path / f"ct{n}.dcm"
        path.write_bytes(ct_instance(study, series, number=n + 1, rows=64, columns=64, seed=n))
        files.append(path)
    jls = TEST_FILES / "MR_small_jpeg_ls_lossless.dcm"   # kept as sent: JPEG-LS lossless proposed with -xt
    done = dcmtk_run("storescu", "-aet", "MODALITY1", "-aec", "DICOMWEB", "127.0.0.1", str(port), *map(str, files))
    assert done.returncode == 0, done.stderr
    done = dcmtk_run("storescu", "-xt", "-aet", "MODALITY1", "-aec", "DICOMWEB", "127.0.0.1", str(port), str(jls))
    assert done.returncode == 0, done.stderr
    [found] = requests.get(f"{server.dicomweb}/studies?StudyInstanceUID={study}", headers=AUTH, timeout=30).json()
    assert found["00201208"]["Value"] == [3]
    r = requests.get(f"{server.dicomweb}/studies/{study}", timeout=60,
                     headers={**AUTH, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    received = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(io.BytesIO(body))
                                                      for _, body in split_multipart(r.content, r.headers["Content-Type"]))}
    for path in files:
        sent = pydicom.dcmread(path)
        assert received[str(sent.SOPInstanceUID)].PixelData == sent.PixelData
    original = pydicom.dcmread(jls)
    r = requests.get(f"{server.dicomweb}/studies/{original.StudyInstanceUID}/metadata", headers=AUTH, timeout=30)
    assert r.json()[0]["00083002"]["Value"] == [original.file_meta.TransferSyntaxUID]   # as sent
    refused = dcmtk_run("storescu", "-v", "-aet", "VIEWER", "-aec", "DICOMWEB", "127.0.0.1", str(port),
                        str(tmp_path / "ct0.dcm"))
    assert "Received Store Response (Unknown Status: 0x124)" in refused.stderr   # Refused: Not Authorized
    assert requests.get(f"{server.dicomweb}/studies?StudyInstanceUID={study}", headers=AUTH,
                        timeout=30).json()[0]["00201208"]["Value"] == [3]   # nothing more stored


def test_findscu_finds_what_stow_rs_stored(node, tmp_path):
    server, port, *_ = node
    study = generate_uid()
    r = requests.post(f"{server.dicomweb}/studies", timeout=60, headers={**AUTH, **stow_headers()},
                      data=multipart_body([ct_instance(study, generate_uid(), rows=8, columns=8,
                                                       patient_name="Findscu^Found", patient_id="FS-1")]))
    assert r.status_code == 200
    done = dcmtk_run("findscu", "-S", "-aet", "VIEWER", "-aec", "DICOMWEB", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientName=Findscu*", "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances",
                     "-X", "-od", str(tmp_path), "127.0.0.1", str(port))
    assert done.returncode == 0, done.stderr
    [answer] = [pydicom.dcmread(p) for p in tmp_path.glob("rsp*.dcm")]
    assert answer.StudyInstanceUID == study and answer.PatientName == "Findscu^Found"
    assert answer.NumberOfStudyRelatedInstances == 1


def test_echoscu_over_dicom_tls(node):
    _, _, _, tls_port, pki, _ = node
    done = dcmtk_run("echoscu", "+tls", str(pki.peer_key), str(pki.peer_cert), "+cf", str(pki.ca), "-aet", "VIEWER",
                     "-aec", "DICOMWEB", "localhost", str(tls_port))
    assert done.returncode == 0, done.stderr
    stranger = dcmtk_run("echoscu", "+tls", str(pki.stranger_key), str(pki.stranger_cert), "+cf", str(pki.ca),
                         "-aet", "VIEWER", "-aec", "DICOMWEB", "localhost", str(tls_port))
    assert stranger.returncode != 0   # a certificate of a CA the operator did not give
    anonymous = dcmtk_run("echoscu", "+tla", "+cf", str(pki.ca), "-aet", "VIEWER", "-aec", "DICOMWEB", "localhost",
                          str(tls_port))
    assert anonymous.returncode != 0   # no certificate at all


def test_dicomweb_aes_adds_a_peer_the_running_listener_lets_in(node):
    _, port, work, _, _, env = node
    command = [sys.executable, "-m", "service.cli", "aes"]
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}, **env}
    assert dcmtk_run("echoscu", "-aet", "US1", "-aec", "DICOMWEB", "127.0.0.1", str(port)).returncode != 0
    subprocess.run([*command, "add", "US1", "127.0.0.1:4010", "--permissions", "store"], cwd=ROOT, env=environment,
                   check=True, capture_output=True, timeout=60)
    time.sleep(1.1)   # the listener looks at the file at most once a second
    assert dcmtk_run("echoscu", "-aet", "US1", "-aec", "DICOMWEB", "127.0.0.1", str(port)).returncode == 0
    listed = subprocess.run([*command, "list"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert "US1@127.0.0.1:4010:store" in listed.stdout and "VIEWER@127.0.0.1:11114:read" in listed.stdout


def test_ready_and_metrics_cover_the_listener(node):
    server, port, *_ = node
    assert dcmtk_run("echoscu", "-aet", "VIEWER", "-aec", "DICOMWEB", "127.0.0.1", str(port)).returncode == 0
    assert dcmtk_run("echoscu", "-aet", "STRANGER", "-aec", "DICOMWEB", "127.0.0.1", str(port)).returncode != 0
    ready = requests.get(server.dicomweb.rsplit("/dicom-web", 1)[0] + "/ready", timeout=30).json()
    assert ready["dimse"] == ready["dimse_tls"] == "ok"
    text = requests.get(server.dicomweb.rsplit("/dicom-web", 1)[0] + "/metrics", timeout=30).text
    assert 'dicomweb_dimse_operations_total{operation="c_echo",status="0x0000"}' in text
    assert 'dicomweb_dimse_associations_total{result="accepted"}' in text
    assert 'dicomweb_dimse_associations_total{result="rejected"}' in text   # the stranger's
    assert "dicomweb_dimse_connections" in text


def test_the_start_script_runs_both_and_a_term_stops_both(tmp_path, dcmtk):
    """deploy/start.sh, what `make serve` and the container run: gunicorn and the listener on one
    metrics directory; a TERM ends both, with gunicorn's status."""
    http_port, dimse_port = free_port(), free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")},
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "DICOMWEB_DATA_DIR": str(tmp_path / "var"),
           "DICOMWEB_API_KEY": API_KEY, "DICOMWEB_BIND": f"127.0.0.1:{http_port}",
           "DICOMWEB_DIMSE_BIND": f"127.0.0.1:{dimse_port}", "DICOMWEB_DIMSE_PEERS": "VIEWER@127.0.0.1:11114:read",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "GUNICORN_CMD_ARGS": "--workers 2"}
    with open(tmp_path / "start.log", "wb") as log:
        started = subprocess.Popen([str(ROOT / "deploy" / "start.sh")], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{http_port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{base}/ready", timeout=2).json().get("dimse") == "ok":
                        break
                except requests.ConnectionError:
                    pass
                assert started.poll() is None, (tmp_path / "start.log").read_text()
                time.sleep(0.2)
            assert dcmtk_run("echoscu", "-aet", "VIEWER", "-aec", "DICOMWEB", "127.0.0.1", str(dimse_port)).returncode == 0
            assert 'operation="c_echo"' in requests.get(f"{base}/metrics", timeout=10).text
        finally:
            started.send_signal(15)
            assert started.wait(30) == 0, (tmp_path / "start.log").read_text()[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", dimse_port), timeout=1).close()
    assert "Traceback" not in (tmp_path / "start.log").read_text()


def test_movescu_to_a_storescp_and_getscu_receive_what_was_stored(node, tmp_path):
    """DCMTK's movescu asks for a study to be sent to ARCHIVE2 (a storescp the test runs, a known
    AE with its address); getscu takes it on its own association. Both get every instance, the
    pixels as stored; an unknown destination is 0xA801."""
    server, port, _, _, _, env = node
    study, series = generate_uid(), generate_uid()
    data = [ct_instance(study, series, number=n, rows=32, columns=32, seed=n) for n in range(1, 4)]
    r = requests.post(f"{server.dicomweb}/studies", timeout=60, headers={**AUTH, **stow_headers()},
                      data=multipart_body(data))
    assert r.status_code == 200
    sent = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(io.BytesIO(b)) for b in data)}
    moved, got = tmp_path / "moved", tmp_path / "got"
    moved.mkdir(), got.mkdir()
    receiver = subprocess.Popen(["storescp", "-aet", "ARCHIVE2", "-od", str(moved), env["_DEST_PORT"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        done = dcmtk_run("movescu", "-S", "-aet", "VIEWER", "-aec", "DICOMWEB", "-aem", "ARCHIVE2",
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port))
        assert done.returncode == 0, done.stderr
        unknown = dcmtk_run("movescu", "-v", "-S", "-aet", "VIEWER", "-aec", "DICOMWEB", "-aem", "NOWHERE",
                            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port))
        assert "Refused: MoveDestinationUnknown" in unknown.stderr + unknown.stdout
    finally:
        receiver.terminate()
        receiver.wait(10)
    done = dcmtk_run("getscu", "-S", "-aet", "VIEWER", "-aec", "DICOMWEB", "-od", str(got),
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port))
    assert done.returncode == 0, done.stderr
    for folder in (moved, got):
        arrived = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in folder.iterdir())}
        assert set(arrived) == set(sent), folder
        for uid, ds in arrived.items():
            assert ds.PixelData == sent[uid].PixelData


@pytest.fixture(scope="module")
def orthanc(node, tmp_path_factory):
    """Debian's Orthanc, knowing our listener as modality "archive"; ours knows it as ORTHANC."""
    from testbed.orthanc import Orthanc

    require_command("Orthanc", "orthanc")
    _, port, *_ = node
    running = Orthanc(tmp_path_factory.mktemp("orthanc"), "ORTHANC", {"archive": ("DICOMWEB", "127.0.0.1", port)})
    yield running
    running.stop()


def test_orthanc_as_a_peer_stores_finds_and_moves_out_of_us(node, orthanc, tmp_path):
    """Orthanc, an independent DIMSE implementation, drives the listener through its REST API:
    it C-FINDs what STOW-RS stored, C-MOVEs it to itself (what arrives is what was stored, byte for
    byte in its pixels) and C-STOREs an instance of its own into us, then seen by QIDO-RS."""
    server, port, work, _, _, env = node
    aes = [sys.executable, "-m", "service.cli", "aes", "add", "ORTHANC", f"127.0.0.1:{orthanc.dicom_port}",
           "--permissions", "read+store"]
    subprocess.run(aes, cwd=ROOT, check=True, capture_output=True, timeout=60,
                   env={**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")},
                        **{k: v for k, v in env.items() if not k.startswith("_")}})
    time.sleep(1.1)   # the listener looks at the AE peers file at most once a second
    study = generate_uid()
    data = [ct_instance(study, generate_uid(), number=n, rows=48, columns=48, seed=n, patient_name="Orthanc^Peer",
                        patient_id="ORTHANC-PEER")
            for n in (1, 2)]
    assert requests.post(f"{server.dicomweb}/studies", timeout=60, headers={**AUTH, **stow_headers()},
                         data=multipart_body(data)).status_code == 200

    r = orthanc.post("/modalities/archive/query", {"Level": "Study", "Query": {"StudyInstanceUID": study,
                                                                                 "PatientName": ""}})
    assert r.status_code == 200, r.text
    answers = orthanc.get(f"{r.json()['Path']}/answers?expand").json()
    assert [a["0010,0010"]["Value"] for a in answers] == ["Orthanc^Peer"]

    r = orthanc.post("/modalities/archive/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
                                                  "TargetAet": "ORTHANC"})
    assert r.status_code == 200, r.text + orthanc.log_path.read_text()[-2000:]
    sent = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(io.BytesIO(b)) for b in data)}
    arrived = {}
    for identifier in orthanc.get("/instances").json():
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{identifier}/file").content))
        arrived[str(ds.SOPInstanceUID)] = ds
    assert set(arrived) == set(sent)
    for uid, ds in arrived.items():
        assert ds.PixelData == sent[uid].PixelData

    own = ct_instance(generate_uid(), generate_uid(), rows=16, columns=16, patient_name="From^Orthanc",
                      patient_id="FROM-ORTHANC")
    uploaded = requests.post(f"{orthanc.base}/instances", data=own, timeout=60).json()
    r = orthanc.post("/modalities/archive/store", {"Resources": [uploaded["ID"]], "Synchronous": True})
    assert r.status_code == 200, r.text
    own_study = str(pydicom.dcmread(io.BytesIO(own)).StudyInstanceUID)
    [found] = requests.get(f"{server.dicomweb}/studies?StudyInstanceUID={own_study}", headers=AUTH, timeout=30).json()
    assert found["00100010"]["Value"][0]["Alphabetic"] == "From^Orthanc"
