import json
import logging

import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service import create_app
from service.auth import identify, presented_key
from service.config import Peer, hash_key
from tests.conftest import API_KEY, PEER, make_config
from testbed.messages import multipart_body, stow_headers

PEERS = (Peer("hospital-a", hash_key("key-a")), Peer("ncp-b", hash_key("key-b")))


@pytest.mark.parametrize("header, key", [
    ("key-a", "key-a"), ("ApiKey key-a", "key-a"), ("Bearer key-a", "key-a"), ("bearer   key-a ", "key-a"),
    ("", None), (None, None), ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
])
def test_presented_key(header, key):
    assert presented_key(header) == key


def test_identify():
    assert identify(PEERS, "key-a") == PEERS[0] and identify(PEERS, "key-a").name == "hospital-a"
    assert identify(PEERS, "key-b").name == "ncp-b"
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


def _app_with_peers(tmp_path, text: str, **config):
    peers = tmp_path / "peers-file"
    peers.write_text(text)
    return create_app(make_config(tmp_path, peers_file=peers, **config)), peers


def test_permissions_are_checked_per_transaction(tmp_path, caplog):
    app, _ = _app_with_peers(tmp_path, f"reader {hash_key('reader-key').hex()} read\n"
                                       f"sender {hash_key('sender-key').hex()} store\n")
    client = app.test_client()
    study = generate_uid()
    stow = lambda key: client.post("/dicom-web/studies", data=multipart_body([ct_instance(study, generate_uid())]),  # noqa: E731
                                   headers={**stow_headers(), "Authorization": f"ApiKey {key}"}, buffered=True)
    with caplog.at_level(logging.INFO, logger="dicomweb.audit"):
        refused = stow("reader-key")
        assert refused.status_code == 403 and "no store permission" in refused.get_json()["message"]
        assert stow("sender-key").status_code == 200
        assert client.get("/dicom-web/studies", headers={"Authorization": "ApiKey sender-key"},
                          buffered=True).status_code == 403
        assert client.get("/dicom-web/studies", headers={"Authorization": "ApiKey reader-key"},
                          buffered=True).status_code == 200
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomweb.audit"]
    assert [(r["peer"], r["permissions"], r["status"]) for r in records] == [
        ("reader", "read", 403), ("sender", "store", 200), ("sender", "store", 403), ("reader", "read", 200)]


def test_only_peers_allowed_to_replace_do(tmp_path):
    app, _ = _app_with_peers(tmp_path, f"plain {hash_key('plain-key').hex()}\n"
                                       f"owner {hash_key('owner-key').hex()} read,store,replace\n",
                             replace_duplicates=True)
    client = app.test_client()
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    versions = [ct_instance(study, series, sop, seed=n) for n in range(3)]
    post = lambda data, key: client.post("/dicom-web/studies", data=multipart_body([data]),  # noqa: E731
                                         headers={**stow_headers(), "Authorization": f"ApiKey {key}"})
    assert post(versions[0], "plain-key").status_code == 200
    r = post(versions[1], "plain-key")
    assert r.status_code == 409 and r.get_json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
    assert post(versions[2], "owner-key").status_code == 200
    stored = client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
                        headers={"Accept": "application/dicom; transfer-syntax=*", "Authorization": "ApiKey owner-key"})
    assert stored.data == versions[2]


def test_a_malformed_peers_file_line_is_skipped_reported_and_revocations_still_apply(tmp_path, caplog):
    from service import metrics

    good, other = hash_key("good-key").hex(), hash_key("other-key").hex()
    # The README's sha256sum, its " -" pasted too: read as the digest it is.
    app, peers = _app_with_peers(tmp_path, f"good {good}  -\nother {other}\n", peers_recheck_seconds=0)
    client = app.test_client()
    assert client.get("/dicom-web/studies", headers={"Authorization": "ApiKey good-key"}).status_code == 200
    assert client.get("/ready").get_json()["peers_file"] == "ok"
    with caplog.at_level(logging.ERROR):
        peers.write_text(f"good {good}  -\nbroken line here\n")   # "other" revoked, and a line that means nothing
        assert client.get("/dicom-web/studies", headers={"Authorization": "ApiKey other-key"}).status_code == 401
        assert client.get("/dicom-web/studies", headers={"Authorization": "ApiKey good-key"}).status_code == 200
    assert any("peers-file:2" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    ready = client.get("/ready")
    assert ready.status_code == 200 and "peers-file:2" in ready.get_json()["peers_file"][0]
    assert metrics.PEERS_FILE_PROBLEMS._value.get() == 1
    assert "dicomweb_peers_file_problems 1.0" in client.get("/metrics").get_data(as_text=True)
    # A server starts with such a file too (it raised before, every second and at start).
    create_app(make_config(tmp_path / "again", peers_file=peers))
