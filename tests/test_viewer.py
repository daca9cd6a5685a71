"""People's pages through the Flask app: sign-in, sessions as credentials (same-origin only,
CSRF-checked), the viewer's files and generated configuration, the landing page. The viewer
build here is a small stand-in laid out as OHIF's; tests/test_browser.py runs the real one."""
import gzip
import io
import json
import logging
import time

import pytest
from pydicom.uid import generate_uid

from service import create_app
from service.config import DEFAULT_PERMISSIONS, Peer, hash_key
from service.sessions import COOKIE, LoginFailures, Sessions
from service.viewer.app_config import app_config
from storage import Catalog
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, PEER, make_config

PERSON_KEY = "person-key-of-dr-house-0123"
READER_KEY = "person-key-of-a-reader-0123"
ORIGIN = "http://localhost"
INDEX = ('<!doctype html><html><head><link rel="manifest" href="/manifest.json"><meta name="x" content="/assets/t.png">'
         '<script>window.PUBLIC_URL="/"</script><script src="/app-config.js"></script>'
         '<script defer src="/app.bundle.0123456789abcdef.js"></script></head><body><div id="root"></div></body></html>')


def stand_in_build(data_dir, version="3.13.2"):
    build = data_dir / "viewer" / f"ohif-{version}"
    build.mkdir(parents=True)
    (build / "index.html").write_text(INDEX)
    bundle = b"console.log('app');\n" * 200
    (build / "app.bundle.0123456789abcdef.js").write_bytes(bundle)
    (build / "app.bundle.0123456789abcdef.js.gz").write_bytes(gzip.compress(bundle))
    (build / "manifest.json").write_text("{}")
    (build / "installed.json").write_text(json.dumps({"version": version}))
    return build


def people_config(tmp_path, **overrides):
    peers = (Peer(PEER, hash_key(API_KEY)),
             Peer("dr-house", hash_key(PERSON_KEY), DEFAULT_PERMISSIONS, person=True),
             Peer("reader", hash_key(READER_KEY), frozenset({"read"}), person=True))
    return make_config(tmp_path, peers=peers, **overrides)


@pytest.fixture
def config(tmp_path):
    return people_config(tmp_path)


@pytest.fixture
def app(config):
    stand_in_build(config.data_dir)
    return create_app(config)


@pytest.fixture
def browser(app):
    """A client with no Authorization header: a browser."""
    return app.test_client()


def sign_in(browser, key=PERSON_KEY, **headers):
    return browser.post("/viewer/login", data={"key": key, "next": "/viewer/viewer?StudyInstanceUIDs=1.2"},
                        headers={"Origin": ORIGIN, **headers})


def stow(browser, buffered=False, **headers):
    body = multipart_body([ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)])
    return browser.post("/dicom-web/studies", data=body, headers={**stow_headers(), **headers}, buffered=buffered)


def test_the_viewer_sends_people_to_sign_in_and_back(browser):
    r = browser.get("/viewer/viewer?StudyInstanceUIDs=1.2")
    assert r.status_code == 303
    assert r.headers["Location"] == "/viewer/login?next=%2Fviewer%2Fviewer%3FStudyInstanceUIDs%3D1.2"
    form = browser.get("/viewer/login?next=/viewer/viewer%3FStudyInstanceUIDs%3D1.2")
    assert form.status_code == 200 and b'name="key"' in form.data and b'type="password"' in form.data
    assert form.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in form.headers["Content-Security-Policy"]
    r = sign_in(browser)
    assert r.status_code == 303 and r.headers["Location"] == "/viewer/viewer?StudyInstanceUIDs=1.2"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie   # plain HTTP here
    page = browser.get("/viewer/viewer?StudyInstanceUIDs=1.2")
    assert page.status_code == 200 and page.mimetype == "text/html"


def test_the_cookie_is_secure_behind_a_proxy_that_says_https(tmp_path):
    config = people_config(tmp_path, trusted_proxies=1)
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    r = sign_in(browser, **{"X-Forwarded-Proto": "https", "Origin": "https://localhost"})
    assert r.status_code == 303 and "Secure" in r.headers["Set-Cookie"]


def test_only_a_persons_key_signs_in(browser):
    r = sign_in(browser, key=API_KEY)   # a system's key
    assert r.status_code == 401 and b"belongs to a system" in r.data and "Set-Cookie" not in r.headers
    r = sign_in(browser, key="no-such-key")
    assert r.status_code == 401 and b"not known" in r.data
    assert sign_in(browser, key="x" * 4000).status_code == 401   # long, but within a sign-in's size


def test_sign_in_failures_are_limited_per_address_and_logged(tmp_path, caplog):
    config = people_config(tmp_path, login_failures_per_minute=3)
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    with caplog.at_level(logging.WARNING, logger="dicomweb.viewer"):
        assert [sign_in(browser, key="wrong").status_code for _ in range(3)] == [401] * 3
        r = sign_in(browser)   # even the right key waits now
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 61
    assert sum("sign-in failed from 127.0.0.1" in m for m in caplog.messages) == 3
    assert any("too many failures from 127.0.0.1" in m for m in caplog.messages)
    assert PERSON_KEY not in caplog.text and "wrong" not in caplog.text
    elsewhere = browser.post("/viewer/login", data={"key": PERSON_KEY}, headers={"Origin": ORIGIN},
                             environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert elsewhere.status_code == 303   # another address is not held back


def _failure_counts(catalog_url: str, redis: bool):
    from service.sessions import RedisFailures
    from storage import Catalog
    from storage.signins import SigninFailures

    counted = SigninFailures(Catalog(catalog_url))   # the app made its schema
    if not redis:
        return counted
    from tests.conftest import need_redis

    need_redis()
    return RedisFailures("redis://127.0.0.1:6379/0", counted)


@pytest.mark.parametrize("redis", [False, True], ids=["catalog", "redis"])
def test_failures_are_counted_for_every_worker_and_expire_after_a_minute(app, redis):
    """Two LoginFailures on one count, as two worker processes hold them: the second sees the
    first's failures (each counted its own before: about 25 of 60 tries got through 4 workers)."""
    import secrets as random

    count = _failure_counts(app.extensions["archive"].catalog.url, redis)
    now = [1_000_000.0]
    workers = [LoginFailures(count, 2, clock=lambda: now[0]) for _ in range(2)]
    address = f"10.9.{random.randbelow(250)}.{random.randbelow(250)}-{random.token_hex(4)}"
    workers[0].failed(address)
    now[0] += 1
    workers[1].failed(address)
    assert workers[0].retry_after(address) == workers[1].retry_after(address) == 59.0
    now[0] += 30
    assert workers[1].retry_after(address) == 29.0 and workers[0].retry_after("elsewhere") == 0.0
    now[0] += 30
    assert workers[0].retry_after(address) == 0.0   # the first failure is a minute old


def test_old_failures_are_forgotten_as_new_ones_come(app):
    from sqlalchemy import func, select

    from storage.schema import signin_failures

    count = _failure_counts(app.extensions["archive"].catalog.url, False)
    failures = LoginFailures(count, 10, clock=lambda: now[0])
    now = [0.0]
    for n in range(500):
        failures.failed(f"10.0.{n // 256}.{n % 256}")
    now[0] = 61.0
    failures.failed("10.1.1.1")
    with app.extensions["archive"].catalog.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(signin_failures)).scalar() == 1


def test_a_session_reads_and_stores_from_the_viewers_own_pages(browser, caplog):
    sign_in(browser)
    with caplog.at_level(logging.INFO, logger="dicomweb.audit"):
        assert browser.get("/dicom-web/studies", buffered=True).status_code == 200
        assert browser.get("/dicom-web/studies", headers={"Sec-Fetch-Site": "same-origin"}, buffered=True).status_code == 200
        assert stow(browser, Origin=ORIGIN, buffered=True).status_code == 200
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomweb.audit"]
    assert [(r["peer"], r["credentials"], r["method"]) for r in records] == [
        ("dr-house", "session", "GET"), ("dr-house", "session", "GET"), ("dr-house", "session", "POST")]


def test_a_session_never_answers_another_origin_or_a_forged_request(tmp_path):
    config = people_config(tmp_path, cors_origins=("http://viewer.example",))
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    sign_in(browser)
    r = browser.get("/dicom-web/studies", headers={"Origin": "http://viewer.example"})   # an allowed CORS origin
    assert r.status_code == 403 and "Authorization" in r.get_json()["message"]
    assert browser.get("/dicom-web/studies", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert browser.get("/dicom-web/studies", headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    r = stow(browser)   # CSRF: a state-changing request without an Origin
    assert r.status_code == 403 and "Origin" in r.get_json()["message"]
    assert stow(browser, Origin="http://evil.example").status_code == 403
    assert browser.post("/viewer/login", data={"key": PERSON_KEY}, headers={"Origin": "http://evil.example"}).status_code == 403
    # The same other origin with a key in Authorization is a program, and welcome.
    r = browser.get("/dicom-web/studies", headers={"Origin": "http://viewer.example", "Authorization": API_KEY})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_a_session_takes_its_persons_permissions(browser):
    sign_in(browser, key=READER_KEY)
    assert browser.get("/dicom-web/studies").status_code == 200
    assert stow(browser, Origin=ORIGIN).status_code == 403
    config = browser.get("/viewer/app-config.js")
    assert b'"dicomUploadEnabled": false' in config.data


def test_signing_out_ends_the_session_for_good(browser):
    sign_in(browser)
    cookie = browser.get_cookie(COOKIE).value
    assert browser.get("/viewer/logout").status_code == 200
    r = browser.post("/viewer/logout", headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["Location"] == "/viewer/login"
    assert f"{COOKIE}=;" in r.headers["Set-Cookie"]
    assert browser.get("/dicom-web/studies").status_code == 401
    browser.set_cookie(COOKIE, cookie)   # the old cookie, kept by someone: refused too
    assert browser.get("/dicom-web/studies").status_code == 401
    assert browser.get("/viewer/").status_code == 303


def test_revoking_or_replacing_the_key_ends_its_sessions(tmp_path):
    peers_file = tmp_path / "peers"
    peers_file.write_text(f"dr-house {hash_key(PERSON_KEY).hex()} read,store person\n")
    config = make_config(tmp_path, peers_file=peers_file, peers_recheck_seconds=0)
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    assert sign_in(browser).status_code == 303
    assert browser.get("/dicom-web/studies").status_code == 200
    peers_file.write_text(f"dr-house {hash_key('a-new-key-for-him').hex()} read,store person\n")
    assert browser.get("/dicom-web/studies").status_code == 401
    peers_file.write_text(f"dr-house {hash_key(PERSON_KEY).hex()} read,store\n")   # no longer a person's key
    assert browser.get("/dicom-web/studies").status_code == 401
    peers_file.write_text(f"dr-house {hash_key(PERSON_KEY).hex()} read,store person\n")
    assert browser.get("/dicom-web/studies").status_code == 200


def test_sessions_expire_when_idle_and_at_their_absolute_limit(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.create_schema()
    now = [1000.0]
    sessions = Sessions(catalog, b"secret", idle_seconds=600, max_seconds=3600, clock=lambda: now[0])
    person = Peer("dr-house", hash_key(PERSON_KEY), person=True)
    cookie = sessions.open(person)
    for _ in range(8):   # used every 500 s: never idle for 600, until the absolute hour is up
        now[0] += 500
        assert sessions.person(cookie, [person]) == (person if now[0] - 1000 <= 3600 else None)
    busy = Sessions(catalog, b"secret", idle_seconds=20, max_seconds=3600, clock=lambda: now[0])
    short = busy.open(person)
    for _ in range(10):   # used every 10 s with a 20 s idle limit: "last used" kept fresh enough
        now[0] += 10
        assert busy.person(short, [person]) == person
    idle = sessions.open(person)
    now[0] += 601
    assert sessions.person(idle, [person]) is None
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    assert sessions.person(forged, [person]) is None and sessions.person("x" * 300, [person]) is None
    other_secret = Sessions(catalog, b"another", 600, 3600, clock=lambda: now[0])
    fresh = sessions.open(person)
    assert other_secret.person(fresh, [person]) is None and sessions.person(fresh, [person]) == person


def test_the_viewer_page_names_its_root_and_isolates_itself(browser):
    sign_in(browser)
    r = browser.get("/viewer/")
    html = r.data.decode()
    assert 'window.PUBLIC_URL="/viewer/"' in html and 'src="/viewer/app.bundle.0123456789abcdef.js"' in html
    assert 'href="/viewer/manifest.json"' in html and 'content="/viewer/assets/t.png"' in html
    assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert r.headers["Cache-Control"] == "no-store"
    # A route of the app that is no file gets the page too; a missing file does not.
    assert browser.get("/viewer/viewer/dicomweb?StudyInstanceUIDs=1.2").data == r.data
    assert browser.get("/viewer/missing.bundle.js").status_code == 404


def test_the_viewers_files_are_served_compressed_cached_and_contained(browser):
    r = browser.get("/viewer/app.bundle.0123456789abcdef.js", headers={"Accept-Encoding": "gzip, br"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip" and r.mimetype == "text/javascript"
    assert gzip.decompress(r.data).startswith(b"console.log")
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable" and "Accept-Encoding" in r.headers["Vary"]
    plain = browser.get("/viewer/app.bundle.0123456789abcdef.js")
    assert "Content-Encoding" not in plain.headers and plain.data.startswith(b"console.log")
    again = browser.get("/viewer/app.bundle.0123456789abcdef.js", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304
    assert browser.get("/viewer/manifest.json").headers["Cache-Control"] == "no-cache"
    (browser.application.config["DICOMWEB"].data_dir / "viewer" / "secret.txt").write_text("not the viewer's")
    for escape in ("/viewer/../secret.txt", "/viewer/%2e%2e/secret.txt", "/viewer/..%2fsecret.txt",
                   "/viewer//etc/passwd", "/viewer/%2fetc%2fpasswd"):
        r = browser.get(escape)
        assert r.status_code in (303, 308, 401, 404) and b"not the viewer's" not in r.data, escape
    assert b"service worker" in browser.get("/viewer/init-service-worker.js").data


def test_the_app_config_is_made_for_this_server_and_person(browser):
    assert browser.get("/viewer/app-config.js").status_code == 401
    sign_in(browser)
    r = browser.get("/viewer/app-config.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript" and r.headers["Cache-Control"] == "no-store"
    text = r.data.decode()
    assert '"routerBasename": "/viewer"' in text and '"qidoRoot": "/dicom-web"' in text
    assert '"wadoRoot": "/dicom-web"' in text and '"dicomUploadEnabled": true' in text
    assert '"thumbnailRendering": "thumbnail"' in text and '"supportsFuzzyMatching": true' in text
    assert '"supportsReject": false' in text   # dr-house may not delete
    assert "/viewer/login" in text and "error.status === 401" in text


def test_the_app_config_is_valid_javascript_setting_window_config():
    text = app_config("/pacs/viewer", "/pacs/dicom-web", "/pacs/viewer/login", can_store=False)
    assert text.count("window.config = ") == 1
    body = text.split("window.config = ", 1)[1].split(";\nwindow.config.httpErrorHandler", 1)[0]
    config = json.loads(body)
    source = config["dataSources"][0]["configuration"]
    assert config["routerBasename"] == "/pacs/viewer" and source["qidoRoot"] == "/pacs/dicom-web"
    assert source["wadoUriRoot"] == "/pacs/dicom-web/wado" and source["dicomUploadEnabled"] is False


def test_without_authentication_the_viewer_needs_no_sign_in(tmp_path):
    config = make_config(tmp_path, auth_enabled=False, peers=())
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    assert browser.get("/viewer/").status_code == 200
    assert browser.get("/viewer/login").status_code == 303
    assert b'"dicomUploadEnabled": true' in browser.get("/viewer/app-config.js").data


@pytest.mark.parametrize("viewer, installed, says", [(False, True, b"DICOMWEB_VIEWER=off"),
                                                     (True, False, b"dicomweb viewer install")])
def test_a_missing_or_disabled_viewer_says_so_and_nothing_else_changes(tmp_path, viewer, installed, says):
    config = people_config(tmp_path, viewer=viewer)
    if installed:
        stand_in_build(config.data_dir)
    client = create_app(config).test_client()
    r = client.get("/viewer/")
    assert r.status_code == 404 and says in r.data
    assert says in client.get("/").data
    assert client.get("/dicom-web/studies", headers={"Authorization": API_KEY}).status_code == 200


def test_the_landing_page_links_what_people_look_for(browser):
    r = browser.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    for link in (b'href="/viewer/"', b'href="/api"', b'href="/openapi.json"', b'href="/health"',
                 b'href="/conformance"'):
        assert link in r.data
    assert b"Sign out" not in r.data
    sign_in(browser)
    assert b"Signed in as <strong>dr-house</strong>" in browser.get("/").data
    api = browser.get("/api")
    assert api.status_code == 200 and b"GET /dicom-web/studies" in api.data and b"QIDO-RS: search studies" in api.data
    conformance = browser.get("/conformance")
    assert conformance.status_code == 200 and conformance.mimetype == "text/plain" and b"QIDO-RS" in conformance.data


def test_sign_in_only_sends_people_on_to_the_viewer(browser):
    for target in ("//evil.example/viewer", "https://evil.example/", "/dicom-web/studies", "/viewer\\@evil",
                   "/viewer/\r\nSet-Cookie: x=1", "/viewer/ x", "/viewer/\u00e9"):
        r = browser.post("/viewer/login", data={"key": PERSON_KEY, "next": target}, headers={"Origin": ORIGIN})
        assert r.headers["Location"] == "/viewer/", target


def test_the_session_table_is_swept(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.create_schema()
    sessions = Sessions(catalog, b"s", 600, 3600, clock=lambda: time.time() - 7200)
    sessions.open(Peer("dr-house", hash_key(PERSON_KEY), person=True))
    Sessions(catalog, b"s", 600, 3600).open(Peer("dr-house", hash_key(PERSON_KEY), person=True))
    assert catalog.forget_sessions(time.time() - 3600) == 1


def test_hostile_sign_in_bodies_and_cookies_get_4xx(browser):
    r = browser.post("/viewer/login", data={"key": "k" * (2 << 20)}, headers={"Origin": ORIGIN})
    assert r.status_code == 413 and "8192" in r.get_json()["message"]
    chunked = browser.post("/viewer/login", input_stream=io.BytesIO(b"key=x"),
                           headers={"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded",
                                    "Transfer-Encoding": "chunked"})
    assert chunked.status_code == 413
    for cookie in ("", "x" * 3000, "a.b.c", "\x00\xff", "dicomweb" * 30):
        browser.set_cookie(COOKIE, cookie)
        assert browser.get("/dicom-web/studies").status_code == 401, cookie


def test_a_person_who_may_delete_is_offered_reject(tmp_path):
    peers = (Peer("archivist", hash_key(PERSON_KEY), DEFAULT_PERMISSIONS | {"delete"}, person=True),)
    config = make_config(tmp_path, peers=peers)
    stand_in_build(config.data_dir)
    browser = create_app(config).test_client()
    sign_in(browser)
    assert b'"supportsReject": true' in browser.get("/viewer/app-config.js").data


def test_the_sign_in_limit_holds_across_gunicorns_workers(tmp_path):
    """Through a real gunicorn of 4 workers (deploy/gunicorn.conf.py on 2 cores), each try on a
    connection of its own: the 11th wrong key from one address is refused whichever worker takes it."""
    import requests

    from testbed.server import Server, free_port

    port = free_port()
    server = Server({"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_API_KEY": "k" * 40,
                     "DICOMWEB_LOGIN_FAILURES_PER_MINUTE": "10"}, port, tmp_path / "gunicorn.log")
    try:
        statuses = [requests.post(f"{server.base}/viewer/login", data={"key": f"wrong-{n}"},
                                  headers={"Origin": server.base, "Connection": "close"}, allow_redirects=False,
                                  timeout=10).status_code for n in range(30)]
    finally:
        server.stop()
    assert statuses == [401] * 10 + [429] * 20
