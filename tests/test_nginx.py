"""End to end through a real nginx (deploy/nginx/dicomweb.conf) in front of a real gunicorn."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from testbed.synthetic import StudySpec, ct_instance, study as synthetic_study
from tests.conftest import API_KEY, free_port, require_nginx
from testbed.messages import multipart_body, read, stow_headers
from testbed.nginx import Nginx
from testbed.server import Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    require_nginx()
    work = tmp_path_factory.mktemp("nginx")
    port = free_port()
    # No public URL: the service learns it from the proxy's forwarded headers.
    server = Server({"DICOMWEB_DATA_DIR": str(work / "var"), "DICOMWEB_API_KEY": API_KEY,
                     "DICOMWEB_TRUSTED_PROXIES": "1"}, port, work / "gunicorn.log")
    nginx = Nginx(work, port, free_port(), free_port())
    yield server, nginx
    nginx.stop()
    server.stop()


def session_for(nginx: Nginx) -> requests.Session:
    session = requests.Session()
    session.trust_env = False          # REQUESTS_CA_BUNDLE would replace our own CA
    session.verify = str(nginx.cert)
    session.headers.update(AUTH)
    return session


def test_dicomweb_client_through_nginx(proxied):
    server, nginx = proxied
    client = DICOMwebClient(f"{nginx.base}/dicom-web", session=session_for(nginx))
    spec = StudySpec(series=2, instances_per_series=3, rows=64, columns=64)
    instances = list(synthetic_study(spec))
    result = client.store_instances([read(data) for *_, data in instances])
    urls = [item["00081190"].value for item in result.ReferencedSOPSequence]
    assert all(url.startswith(f"{nginx.base}/dicom-web/studies/") for url in urls)
    study_uid = instances[0][0]
    [found] = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert found["00081190"]["Value"][0] == f"{nginx.base}/dicom-web/studies/{study_uid}"
    assert len(client.retrieve_study(study_uid)) == 6
    metadata = client.retrieve_series_metadata(study_uid, instances[0][1])
    assert metadata[0]["7FE00010"]["BulkDataURI"].startswith(nginx.base)


def test_json_is_gzipped_and_dicom_is_not(proxied):
    server, nginx = proxied
    session = session_for(nginx)
    session.post(f"{nginx.base}/dicom-web/studies", headers=stow_headers(),
                 data=multipart_body([ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)]))
    r = session.get(f"{nginx.base}/dicom-web/studies", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers.get("Content-Encoding") == "gzip"


def test_unknown_host_names_are_dropped(proxied):
    server, nginx = proxied
    context = ssl.create_default_context(cafile=str(nginx.cert))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", nginx.https_port)) as raw, pytest.raises(ssl.SSLError):
        with context.wrap_socket(raw, server_hostname="intruder.example"):
            pass
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{nginx.http_port}/dicom-web/studies", headers={"Host": "intruder.example"})
    r = requests.get(f"http://127.0.0.1:{nginx.http_port}/health", headers={"Host": "localhost"},
                     allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"].startswith("https://localhost")


def test_a_slow_download_neither_spools_nor_blocks_others(proxied):
    """A client reading a 40 MB study slowly: nginx keeps at most its memory buffers (nothing
    on disk), and searches through the same server answer meanwhile."""
    server, nginx = proxied
    session = session_for(nginx)
    study_uid = generate_uid()
    datas = [ct_instance(study_uid, generate_uid(), rows=512, columns=512, number=n) for n in range(80)]
    session.post(f"{nginx.base}/dicom-web/studies", headers=stow_headers(), data=multipart_body(datas))
    spooled, done = [], threading.Event()

    def slow_reader():
        with session_for(nginx).get(f"{nginx.base}/dicom-web/studies/{study_uid}", stream=True,
                                    headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                       "transfer-syntax=*"}) as r:
            for _ in r.iter_content(64 << 10):
                spooled.append(nginx.temp_bytes())
                time.sleep(0.01)
        done.set()

    reader = threading.Thread(target=slow_reader)
    reader.start()
    time.sleep(1)
    latencies = []
    for _ in range(10):
        start = time.perf_counter()
        assert session.get(f"{nginx.base}/dicom-web/studies?limit=5").status_code == 200
        latencies.append(time.perf_counter() - start)
    assert not done.is_set(), "the slow download finished before the searches: the test proves nothing"
    reader.join(120)
    assert max(spooled) == 0
    assert sorted(latencies)[len(latencies) // 2] < 0.5


def test_metrics_of_every_worker_on_the_app_port_not_through_nginx(proxied):
    server, nginx = proxied
    session = session_for(nginx)
    for _ in range(8):   # spread over the workers
        session.get(f"{nginx.base}/dicom-web/studies?limit=1")
    text = requests.get(f"{server.base}/metrics").text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith('dicomweb_requests_total{status="200",transaction="qido_rs"}'))
    assert counted >= 8
    assert session.get(f"{nginx.base}/metrics").status_code == 404
    assert requests.get(f"{server.base}/ready").json()["status"] == "ok"


def test_slow_clients_cannot_take_every_thread(proxied):
    """64 slow requests from one address (uploads trickling a byte a second, downloads never
    read) are held while searches from another address answer in 200 ms p95; a 65th from the
    same address is refused (503). With 4 threads a worker, the searches waited 30 s and more."""
    from testbed.slow_clients import hold_and_search, tls_context

    server, nginx = proxied
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), rows=512, columns=512, number=n) for n in range(60)]
    assert requests.post(f"{server.dicomweb}/studies", data=multipart_body(datas), timeout=120,
                         headers={**stow_headers(), **AUTH}).status_code == 200
    result = hold_and_search(nginx.https_port, tls_context(nginx.cert), API_KEY, study, slow=64, searches=60)
    assert result["held"] == 64 and result["refused"] == 0 and result["one_more_refused"], result
    assert result["p95_ms"] < 200, result


def test_forwarded_headers_a_client_sends_are_not_believed(proxied):
    """Through nginx, a client's own X-Forwarded-* headers choose neither the host, the scheme
    nor the prefix of the URLs handed out, nor the address the audit line records."""
    server, nginx = proxied
    session = session_for(nginx)
    spoofed = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/evil", "X-Forwarded-Proto": "http",
               "X-Forwarded-Port": "81", "X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9;host=evil"}
    study = generate_uid()
    r = session.post(f"{nginx.base}/dicom-web/studies", headers={**stow_headers(), **spoofed},
                     data=multipart_body([ct_instance(study, generate_uid(), rows=8, columns=8)]))
    assert r.json()["00081190"]["Value"][0] == f"{nginx.base}/dicom-web/studies/{study}"
    [found] = session.get(f"{nginx.base}/dicom-web/studies?StudyInstanceUID={study}", headers=spoofed).json()
    assert found["00081190"]["Value"][0] == f"{nginx.base}/dicom-web/studies/{study}"
    [model] = session.get(f"{nginx.base}/dicom-web/studies/{study}/metadata", headers=spoofed).json()
    assert model["7FE00010"]["BulkDataURI"].startswith(f"{nginx.base}/dicom-web/studies/{study}/")
    deadline, audit = time.monotonic() + 5, []
    while not audit and time.monotonic() < deadline:
        audit = [line for line in server.log().splitlines() if study in line and "/metadata" in line]
        time.sleep(0.1)
    assert audit and "evil" not in audit[-1] and "203.0.113.9" not in audit[-1] and '"remote":"127.0.0.1"' in audit[-1]
