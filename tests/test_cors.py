from pydicom.uid import generate_uid

from service import create_app
from service.cors import allowed_origin
from service.config import Config
from tests.conftest import API_KEY, make_config

VIEWER = "https://viewer.example.org"


def test_allowed_origin():
    assert allowed_origin(VIEWER, (VIEWER,)) == VIEWER
    assert allowed_origin("https://evil.example", (VIEWER,)) is None
    assert allowed_origin(VIEWER, ("*",)) == "*"
    assert allowed_origin(None, ("*",)) is None
    assert allowed_origin(VIEWER, ()) is None


def test_origins_from_environment():
    config = Config.from_env({"DICOMWEB_CORS_ORIGINS": f"{VIEWER}/, http://localhost:3000", "DICOMWEB_AUTH": "off"})
    assert config.cors_origins == (VIEWER, "http://localhost:3000")


def test_preflight_needs_no_key_and_answers_the_viewer(tmp_path):
    client = create_app(make_config(tmp_path, cors_origins=(VIEWER,))).test_client()
    r = client.options("/dicom-web/studies", headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    r = client.options("/dicom-web/studies", headers={"Origin": "https://evil.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_actual_requests_still_need_a_key_and_expose_headers(tmp_path):
    client = create_app(make_config(tmp_path, cors_origins=(VIEWER,))).test_client()
    r = client.get("/dicom-web/studies", headers={"Origin": VIEWER})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == VIEWER
    r = client.get(f"/dicom-web/studies?StudyInstanceUID={generate_uid()}",
                   headers={"Origin": VIEWER, "Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and "Warning" in r.headers["Access-Control-Expose-Headers"]
    exposed = {name.strip() for name in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Warning", "Content-Location", "Content-Range", "ETag", "Location"} <= exposed
    assert r.headers["Vary"] == "Origin" and r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_every_answer_varies_by_origin_once_cors_is_on(tmp_path):
    """A shared cache must not give an answer made without CORS headers (no Origin, or another
    origin) to the viewer's origin: every answer says Vary: Origin, once, beside Accept-Encoding."""
    client = create_app(make_config(tmp_path, cors_origins=(VIEWER,))).test_client()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for origin in ({}, {"Origin": "https://evil.example"}):
        r = client.get(f"/dicom-web/studies?StudyInstanceUID={generate_uid()}", headers={**auth, **origin})
        assert "Access-Control-Allow-Origin" not in r.headers and r.headers.get_all("Vary").count("Origin") <= 1
        assert "Origin" in {v.strip() for value in r.headers.get_all("Vary") for v in value.split(",")}


def test_off_by_default(app):
    client = app.test_client()
    r = client.get("/dicom-web/studies", headers={"Origin": VIEWER})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = client.options("/dicom-web/studies", headers={"Origin": VIEWER, "Access-Control-Request-Method": "GET"})
    # Answered as Retrieve Capabilities (no key needed), but without any Access-Control header:
    # the browser's preflight fails.
    assert r.mimetype == "application/vnd.sun.wadl+xml"
    assert not [name for name in r.headers.keys() if name.startswith("Access-Control")]
