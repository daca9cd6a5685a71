"""The origin rule (service.content_policy, docs/security.md): every answer says nosniff; every
answer but our own pages is sandboxed and loads nothing, with what its kind truly needs; a peer's
bytes under a media type that may run (an upstream's answer here; documents in test_documents)
are sent as attachments of application/octet-stream. The browser's side is in test_browser."""
from __future__ import annotations

import http.server
import json
import threading

import pytest
from pydicom.uid import generate_uid

from service import create_app
from service.content_policy import ANSWER_POLICY, READABLE_PAGE_POLICY, VIDEO_POLICY, as_sent
from testbed.synthetic import ct_instance, video_instance
from tests.conftest import API_KEY, make_config


@pytest.mark.parametrize("media_type, sent", [
    ("application/pdf", "application/pdf"), ("video/mp4", "video/mp4"), ("image/png", "image/png"),
    ("Image/JPEG", "Image/JPEG"), ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
    ("text/html", "application/octet-stream"), ("image/svg+xml", "application/octet-stream"),
    ("text/xml", "application/octet-stream"), ("application/xml", "application/octet-stream"),
    ("application/dicom+xml", "application/octet-stream"), ("text/javascript", "application/octet-stream"),
    ("application/xhtml+xml", "application/octet-stream"), ("multipart/x-mixed-replace", "application/octet-stream"),
    ("", "application/octet-stream"),
])
def test_only_passive_types_are_sent_as_themselves(media_type, sent):
    content_type, headers = as_sent(media_type, 'a"b/../c')
    assert content_type == sent
    if sent == "application/octet-stream":
        assert headers == {"Content-Disposition": 'attachment; filename="a_b_.._c"'}   # no quote, no slash
    else:
        assert headers == {}


def _stored(client, data: bytes) -> str:
    r = client.post("/dicom-web/studies", data=data, content_type="application/dicom")
    assert r.status_code == 200, r.get_data()
    return r.get_json()["00081199"]["Value"][0]["00081190"]["Value"][0].removeprefix("http://localhost")


def test_every_kind_of_answer_carries_the_policy_its_kind_needs(client):
    instance = _stored(client, ct_instance(generate_uid(), generate_uid(), rows=16, columns=16))
    video = _stored(client, video_instance(generate_uid(), generate_uid(), seconds=0.5))
    answers = {
        "/dicom-web/studies": ANSWER_POLICY,
        instance: ANSWER_POLICY,
        instance + "/metadata": ANSWER_POLICY,
        instance + "/frames/1": ANSWER_POLICY,
        instance + "/rendered": ANSWER_POLICY,
        instance + "/thumbnail": ANSWER_POLICY,
        video + "/rendered": VIDEO_POLICY,
        "/dicom-web/studies/1.2.3": ANSWER_POLICY,            # a 404 too
        "/openapi.json": ANSWER_POLICY,
        "/health": ANSWER_POLICY,
        "/fhir/ImagingStudy": ANSWER_POLICY,
    }
    for path, policy in answers.items():
        r = client.get(path, buffered=True)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["Content-Security-Policy"] == policy, path
    r = client.options("/dicom-web/")
    assert r.headers["Content-Security-Policy"] == ANSWER_POLICY and r.headers["X-Content-Type-Options"] == "nosniff"


def test_our_own_pages_keep_their_own_policy_and_the_viewer_is_isolated(client):
    for path in ("/", "/viewer/login"):
        r = client.get(path)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" not in r.headers["Content-Security-Policy"]   # their forms must work
        assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_a_readable_report_page_has_its_style_and_nothing_else():
    assert READABLE_PAGE_POLICY.startswith("sandbox; default-src 'none'") and "script" not in READABLE_PAGE_POLICY


@pytest.fixture
def hostile_upstream():
    """An upstream (a peer) that answers every retrieve with a page of script."""
    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802
            body = b"<html><script>fetch('/dicom-web/studies').then(r => r.text()).then(alert)</script></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/dicom-web"
    server.shutdown()


def test_an_upstreams_active_answer_is_relayed_as_an_attachment(tmp_path, hostile_upstream):
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([{"name": "hostile", "url": hostile_upstream, "timeout": 2, "serves": ["retrieve"]}]))
    client = create_app(make_config(tmp_path, upstreams_file=path)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    r = client.get("/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered", buffered=True)
    assert r.status_code == 200 and b"<script>" in r.get_data()
    assert r.mimetype == "application/octet-stream" and r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["Content-Security-Policy"] == ANSWER_POLICY
