import json
import logging

import pytest
from pydicom.uid import generate_uid

from bench.synthetic import ct_instance
from service import create_app
from service.auth import identify, presented_key
from service.config import Peer, hash_key
from tests.conftest import API_KEY, PEER, make_config
from tests.helpers import multipart_body, stow_headers

PEERS = (Peer("hospital-a", hash_key("key-a")), Peer("ncp-b", hash_key("key-b")))


@pytest.mark.parametrize("header, key", [
    ("key-a", "key-a"), ("ApiKey key-a", "key-a"), ("Bearer key-a", "key-a"), ("bearer   key-a ", "key-a"),
    ("", None), (None, None), ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
])
def test_presented_key(header, key):
    assert presented_key(header) == key


def test_identify():
    assert identify(PEERS, "key-a") == "hospital-a"
    assert identify(PEERS, "key-b") == "ncp-b"
    assert identify(PEERS, "key-c") is None
    assert identify(PEERS, None) is None
    assert identify((), "key-a") is None


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.mark.parametrize("method, path", [
    ("get", "/dicom-web/studies/1.2.3"), ("post", "/dicom-web/studies"), ("get", "/dicom-web/nothing-here"),
])
@pytest.mark.parametrize("authorization", [None, "wrong-key", f"ApiKey {API_KEY}x", f"Bearer {API_KEY[:-1]}"])
def test_missing_or_wrong_key_is_401(anonymous, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = getattr(anonymous, method)(path, headers=headers)
    assert r.status_code == 401
    assert "ApiKey" in r.headers["WWW-Authenticate"] and "Bearer" in r.headers["WWW-Authenticate"]
    assert r.get_json()["message"]


@pytest.mark.parametrize("scheme", ["", "ApiKey ", "Bearer "])
def test_right_key_passes(anonymous, scheme):
    r = anonymous.get(f"/dicom-web/studies/{generate_uid()}", headers={"Authorization": scheme + API_KEY})
    assert r.status_code == 404


def test_health_needs_no_key(anonymous):
    r = anonymous.get("/health")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"


def test_auth_off_only_when_asked(tmp_path):
    with pytest.raises(ValueError, match="no API key"):
        create_app(make_config(tmp_path, peers=()))
    app = create_app(make_config(tmp_path, peers=(), auth_enabled=False))
    assert app.test_client().get(f"/dicom-web/studies/{generate_uid()}").status_code == 404


def test_audit_line_per_request(client, caplog):
    study = generate_uid()
    with caplog.at_level(logging.INFO, logger="dicomweb.audit"):
        client.post("/dicom-web/studies", data=multipart_body([ct_instance(study, generate_uid())]),
                    headers=stow_headers(), buffered=True)
        body = client.get(f"/dicom-web/studies/{study}", buffered=True).data
        client.get("/dicom-web/studies/1.2.3", headers={"Authorization": "Bearer not-the-key"}, buffered=True)
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomweb.audit"]
    assert [r["status"] for r in records] == [200, 200, 401]
    stow, wado, denied = records
    assert stow["peer"] == PEER and stow["method"] == "POST" and stow["path"] == "/dicom-web/studies"
    assert wado["study"] == study and wado["bytes_sent"] == len(body) and wado["complete"]
    assert denied["peer"] is None
    assert all(API_KEY not in r.getMessage() and "not-the-key" not in r.getMessage() for r in caplog.records)
    assert {"time", "remote", "duration_ms"} <= set(stow)
