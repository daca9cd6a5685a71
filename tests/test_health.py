"""Health, readiness and metrics: unauthenticated, for load balancers and Prometheus."""
import shutil

import pytest

from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from testbed.messages import multipart_body, stow_headers
from storage import Catalog

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def test_health_and_ready(app, client):
    anonymous = app.test_client()
    assert anonymous.get("/health").get_json() == {"status": "ok"}
    r = anonymous.get("/ready")
    assert r.status_code == 200 and r.get_json() == {"status": "ok", "catalog": "ok", "store": "ok", "peers_file": "ok"}


def test_ready_says_whether_this_nodes_dimse_listener_takes_connections(tmp_path):
    """Said, not a reason to take the node out of an HTTP balancer: its HTTP side still serves."""
    import socket

    from service import create_app
    from tests.conftest import make_config

    listening = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    config = make_config(tmp_path, dimse_bind=f"127.0.0.1:{listening.getsockname()[1]}",
                         dimse_tls_bind=f"127.0.0.1:{closed_port}")
    try:
        r = create_app(config).test_client().get("/ready")
        assert r.status_code == 200 and (r.get_json()["dimse"], r.get_json()["dimse_tls"]) == ("ok", "unreachable")
    finally:
        listening.close()


def test_not_ready_when_the_store_or_catalog_is_gone(app, monkeypatch):
    anonymous = app.test_client()
    shutil.rmtree(app.config["DICOMWEB"].storage)
    r = anonymous.get("/ready")
    assert r.status_code == 503 and r.get_json()["store"] == "unreachable"
    monkeypatch.setattr(Catalog, "ping", lambda: (_ for _ in ()).throw(ConnectionError("down")))
    assert anonymous.get("/ready").get_json()["catalog"] == "unreachable"
    assert anonymous.get("/health").status_code == 200   # alive, though not ready


def test_metrics_count_requests_bytes_and_instances(app, client):
    from service import metrics

    before = metrics.INSTANCES.labels("stored")._value.get()
    client.post("/dicom-web/studies", data=multipart_body([ct_instance(generate_uid(), generate_uid(), rows=8,
                                                                       columns=8)]), headers=stow_headers())
    answer = client.get("/dicom-web/studies")
    answer.get_data()
    answer.close()   # the audit middleware records an answer when its body is closed
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'dicomweb_requests_total{status="200",transaction="qido_rs"}' in text
    assert "dicomweb_response_bytes_total" in text and "dicomweb_request_seconds_bucket" in text
    assert metrics.INSTANCES.labels("stored")._value.get() == before + 1


@pytest.mark.defect_expected
def test_an_unexpected_exception_is_a_500_counted_in_the_metrics(app, client, monkeypatch):
    """The last-resort handler answers 500 without details and counts the defect, before and
    after an answer has started; the suite's guard (tests/conftest.py) reads that count."""
    from tests.conftest import unexpected_errors

    archive = app.extensions["archive"]
    before = unexpected_errors()
    monkeypatch.setattr(archive, "search", lambda *a: 1 / 0)
    r = client.get("/dicom-web/studies")
    assert r.status_code == 500 and r.get_json()["message"] == "the server failed to handle the request"
    assert unexpected_errors() == before + 1
    study = generate_uid()
    client.post("/dicom-web/studies", data=multipart_body([ct_instance(study, generate_uid())]), headers=stow_headers())
    monkeypatch.setattr(archive, "body", lambda *a: (1 / 0 for _ in [0]))
    answer = client.get(f"/dicom-web/studies/{study}", headers={"Accept": ANY}, buffered=False)
    with pytest.raises(ZeroDivisionError):
        answer.get_data()
    answer.close()
    assert unexpected_errors() == before + 2
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'dicomweb_unexpected_errors_total{transaction="qido_rs"}' in text
