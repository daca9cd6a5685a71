"""The viewer in a real browser: Debian's chromium, driven by Playwright, against gunicorn serving
the real OHIF build (from the npm registry, as `make serve` installs it) over an archive holding
every readable file of pydicom's test data and six studies made from them, one a kind of image.

What is checked is what a person sees: the study list, the image drawn in the viewport compared
with the server's own rendering of the same instance (so that a canvas showing the wrong image,
or noise, fails), the thumbnails, and that no DICOMweb request failed and nothing was logged as
an error. Screenshots go to DICOMWEB_SCREENSHOTS when it is set (docs/viewer.md's come from it).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid

from service.viewer.app_config import app_config
from service.viewer.build import install
from testbed.server import ROOT, Server, free_port
from testbed.synthetic import ct_instance
from tests.conftest import TEST_FILES, in_ci

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VERSION = "3.13.2"
SYSTEM_KEY = "browser-test-system-key-0123456789"
PERSON_KEY = "browser-test-person-key-0123456789"
# One study a kind of image, each made from a pydicom test file with UIDs and a name of its own.
KINDS = {
    "CT": "CT_small.dcm",                       # uncompressed CT
    "RLE": "MR_small_RLE.dcm",
    "JPEGLS": "MR_small_jpeg_ls_lossless.dcm",
    "J2K": "MR_small_jp2klossless.dcm",
    "USCINE": "examples_ybr_color.dcm",         # 30 frames of baseline JPEG, YBR_FULL_422
    "RGB": "examples_rgb_color.dcm",            # uncompressed RGB ultrasound
}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (apt-get install -y chromium; make test does it)"
    if shutil.which("npm") is None:
        return "npm is not installed (apt-get install -y npm; make test does it)"
    return None


_why = _missing()
if _why and in_ci():
    raise RuntimeError(f"the browser tests must run in CI: {_why}")
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def viewer_builds() -> Path:
    """The real OHIF build, installed once into .cache/viewer (kept between runs: 50 MB from the registry)."""
    root = ROOT / ".cache" / "viewer"
    install(root, VERSION)
    return root


def _kind_study(label: str, source: str, into: Path) -> str:
    ds = pydicom.dcmread(TEST_FILES / source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDescription = f"Viewer^{label}", f"VIEWER-{label}", f"{label} study"
    ds.save_as(into / f"{label}.dcm", enforce_file_format=True)
    return ds.StudyInstanceUID


def _peers_line(name: str, key: str, rest: str) -> str:
    return f"{name} {hashlib.sha256(key.encode()).hexdigest()} {rest}\n"


@pytest.fixture(scope="module")
def archive_server(tmp_path_factory, viewer_builds):
    work = tmp_path_factory.mktemp("browser")
    data = work / "var"
    data.mkdir()
    (data / "viewer").symlink_to(viewer_builds)
    (data / "peers").write_text(_peers_line("scripts", SYSTEM_KEY, "read,store") +
                                _peers_line("dr-house", PERSON_KEY, "read,store person"))
    kinds = work / "kinds"
    kinds.mkdir()
    studies = {label: _kind_study(label, source, kinds) for label, source in KINDS.items()}
    external = free_port()
    env = {"DICOMWEB_DATA_DIR": str(data), "DICOMWEB_CORS_ORIGINS": f"http://127.0.0.1:{external}",
           "DICOMWEB_FSYNC": "off"}
    imported = subprocess.run([sys.executable, "-m", "service.cli", "import", str(TEST_FILES), str(kinds)],
                              env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert imported.returncode in (0, 1), imported.stderr[-2000:]   # 1: some of pydicom's files are not DICOM
    server = Server(env, free_port(), work / "gunicorn.log")
    try:
        yield server, studies, external
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


class Watched:
    """A browser page whose failed DICOMweb requests and console errors are kept."""

    def __init__(self, context, dicomweb: str) -> None:
        self.page = context.new_page()
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.requests: list = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r) if r.url.startswith(dicomweb) else None)
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}")
                     if r.url.startswith(dicomweb) and r.status >= 400 else None)
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.failure} {r.url}")
                     if r.url.startswith(dicomweb) else None)

    def clean(self) -> None:
        assert not self.failed, self.failed[:5]
        assert not self.errors, self.errors[:5]


@contextmanager
def signed_in(chromium, server):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    watched = Watched(context, server.dicomweb)
    page = watched.page
    page.goto(server.base + "/viewer/")
    assert "/viewer/login" in page.url
    page.fill("#key", PERSON_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/viewer/")
    try:
        yield watched
    finally:
        context.close()


def _skip_tour(page) -> None:
    """OHIF's first-visit tour, closed so that the screenshots show the images."""
    skip = page.get_by_text("Skip all", exact=True)
    if skip.count():
        skip.first.click()
        page.wait_for_timeout(300)


def screenshot(page, name: str) -> None:
    folder = os.environ.get("DICOMWEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_the_study_list_shows_the_whole_archive_and_narrows_by_name(chromium, archive_server):
    server, studies, _ = archive_server
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.get_by_text("Viewer, CT", exact=True).wait_for(timeout=30_000)
        for name in ("Viewer, RLE", "Viewer, RGB", "Doe, Peter", "CompressedSamples, CT1"):
            assert page.get_by_text(name, exact=True).first.is_visible(), name
        screenshot(page, "study-list")
        page.locator("input").first.fill("Viewer")
        page.wait_for_timeout(1500)
        rows = page.locator("text=/^Viewer, /")
        assert sorted(rows.all_inner_texts()) == sorted(f"Viewer, {label}" for label in KINDS)
        assert not page.get_by_text("Doe, Peter", exact=True).count()
        watched.clean()


VIEWPORT_CANVAS = "[data-cy=viewport-pane] canvas.cornerstone-canvas"


def _canvas_pixels(page, selector: str = VIEWPORT_CANVAS) -> np.ndarray:
    data = page.evaluate(f"() => document.querySelector('{selector}').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("L"), dtype=float)


def _wait_for_picture(page, selector: str = VIEWPORT_CANVAS) -> None:
    """Until the viewport's canvas holds something other than black."""
    page.wait_for_function(f"() => {{ const c = document.querySelector('{selector}');"
                           " if (!c || !c.width) return false;"
                           " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                           " for (let i = 0; i < d.length; i += 4 * 97) if (d[i] || d[i + 1] || d[i + 2]) return true;"
                           " return false; }", timeout=45_000)


def _fitted(canvas: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The canvas cut to where an image of ``rows`` × ``columns`` is fitted in it (centred,
    proportions kept), resized back to that image's size."""
    height, width = canvas.shape
    scale = min(width / columns, height / rows)
    w, h = round(columns * scale), round(rows * scale)
    x0, y0 = (width - w) // 2, (height - h) // 2
    shown = Image.fromarray(canvas[y0:y0 + h, x0:x0 + w].astype(np.uint8)).resize((columns, rows), Image.BILINEAR)
    return np.asarray(shown, dtype=float)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.ravel().argsort().argsort(), b.ravel().argsort().argsort()
    return float(np.corrcoef(ra, rb)[0, 1])


def _shown_like_ours(page, server, study: str) -> float:
    """How closely the viewport's picture matches the server's own rendering of the study's
    first instance: the canvas cut to where the image is fitted, against /rendered at that size."""
    canvas = _canvas_pixels(page)
    [instance] = requests.get(f"{server.dicomweb}/studies/{study}/instances",
                              headers={"Authorization": SYSTEM_KEY}, timeout=10).json()[:1]
    series, sop = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]
    rows, columns = instance["00280010"]["Value"][0], instance["00280011"]["Value"][0]
    shown = _fitted(canvas, rows, columns)
    ours = requests.get(f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}/rendered",
                        headers={"Authorization": SYSTEM_KEY, "Accept": "image/png"}, timeout=30)
    assert ours.status_code == 200
    expected = np.asarray(Image.open(io.BytesIO(ours.content)).convert("L"), dtype=float)
    return _rank_correlation(shown, expected)


@pytest.mark.parametrize("label", list(KINDS))
def test_each_kind_of_image_is_drawn_as_the_server_renders_it(chromium, archive_server, label):
    server, studies, _ = archive_server
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.goto(f"{server.base}/viewer/viewer?StudyInstanceUIDs={studies[label]}")
        _wait_for_picture(page)
        page.wait_for_function("() => [...document.querySelectorAll('[data-cy=study-browser-thumbnail] img')]"
                               ".some(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
        page.wait_for_timeout(1000)   # the last frames of a cine settle
        similarity = _shown_like_ours(page, server, studies[label])
        other = _shown_like_ours(page, server, studies["RGB" if label != "RGB" else "CT"])
        _skip_tour(page)
        screenshot(page, f"viewer-{label.lower()}")
        # Seen 0.96-0.995 against its own rendering, under 0.14 against another image's.
        assert similarity > 0.9 > 0.5 > other, f"{label}: {similarity:.2f} like its rendering, {other:.2f} like another's"
        watched.clean()


def test_a_person_uploads_through_the_viewer(chromium, archive_server, tmp_path):
    server, _, _ = archive_server
    study = generate_uid()
    upload = tmp_path / "upload.dcm"
    upload.write_bytes(ct_instance(study, generate_uid(), rows=32, columns=32, patient_name="Uploaded^ByViewer"))
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.get_by_text("Upload", exact=True).click()
        page.locator("input[type=file]").first.set_input_files(str(upload))
        found = []
        for _ in range(60):
            found = requests.get(f"{server.dicomweb}/studies?StudyInstanceUID={study}",
                                 headers={"Authorization": SYSTEM_KEY}, timeout=10).json()
            if found:
                break
            page.wait_for_timeout(500)
        assert found and found[0]["00100010"]["Value"][0]["Alphabetic"] == "Uploaded^ByViewer"
        stow = [r for r in watched.requests if r.method == "POST"]
        assert stow and stow[0].all_headers().get("origin") == server.base   # what the CSRF check needs
        watched.clean()


def _fetch_status(page, url: str, credentials: str = "same-origin"):
    """The status of a fetch from the page, or the error the browser gave instead."""
    return page.evaluate("([url, credentials]) => fetch(url, {credentials}).then(r => r.status, e => String(e))",
                         [url, credentials])


def test_signing_out_ends_access(chromium, archive_server):
    server, _, _ = archive_server
    with signed_in(chromium, server) as watched:
        page = watched.page
        cookies = page.context.request   # the browser's own cookie jar, outside any page
        assert cookies.get(server.dicomweb + "/studies?limit=1").status == 200
        page.goto(server.base + "/")
        assert page.get_by_text("Signed in as dr-house").is_visible()
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(server.base + "/viewer/login")
        assert cookies.get(server.dicomweb + "/studies?limit=1").status == 401
        page.goto(server.base + "/viewer/")
        assert "/viewer/login" in page.url


class _Origin(BaseHTTPRequestHandler):
    """Another origin: the OHIF build configured for the archive's absolute URLs (an external
    viewer), and a page of its own."""

    build: Path
    config_js: str

    def do_GET(self):  # noqa: N802
        path = self.path.split("?", 1)[0].lstrip("/")
        if path == "app-config.js":
            body, kind = self.config_js.encode(), "text/javascript"
        elif path in ("init-service-worker.js", "sw.js"):
            body, kind = b"", "text/javascript"
        elif path and (self.build / path).is_file():
            body = (self.build / path).read_bytes()
            kind = {".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css",
                    ".json": "application/json"}.get(Path(path).suffix, "application/octet-stream")
        elif path == "other-site.html":
            body, kind = b"<!doctype html><title>another site</title>", "text/html"
        else:
            body, kind = (self.build / "index.html").read_bytes(), "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_origin(archive_server, viewer_builds):
    server, _, port = archive_server
    handler = type("Origin", (_Origin,), {
        "build": viewer_builds / f"ohif-{VERSION}",
        "config_js": app_config("/", server.dicomweb, server.base + "/viewer/login", can_store=False)})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def _audit(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')]


def test_the_session_cookie_is_refused_from_another_origin(chromium, archive_server, other_origin):
    server, _, _ = archive_server
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.goto(other_origin + "/other-site.html")
        before = len(_audit(server))
        # Never readable there (no Access-Control-Allow-Credentials), and refused here: the browser
        # sends the cookie (another port is the same site), the Origin names another origin.
        assert "Failed to fetch" in str(_fetch_status(page, server.dicomweb + "/studies?limit=1", "include"))
        page.wait_for_timeout(300)
        refused = [r for r in _audit(server)[before:] if r["status"] == 403]
        assert [(r["path"], r["peer"]) for r in refused] == [("/dicom-web/studies", None)]


def test_an_external_ohif_works_through_cors_with_a_bearer_token(chromium, archive_server, other_origin):
    server, studies, _ = archive_server
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    try:
        watched = Watched(context, server.dicomweb)
        page = watched.page
        page.goto(f"{other_origin}/viewer?StudyInstanceUIDs={studies['CT']}&token={SYSTEM_KEY}")
        page.wait_for_function("() => { const c = document.querySelector('[data-cy=viewport-pane] canvas.cornerstone-canvas');"
                               " if (!c || !c.width) return false;"
                               " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                               " for (let i = 0; i < d.length; i += 4 * 97) if (d[i]) return true; return false; }",
                               timeout=45_000)
        assert _shown_like_ours(page, server, studies["CT"]) > 0.8
        sent = [r for r in watched.requests if "/frames/" in r.url or "/metadata" in r.url]
        assert sent and all(r.all_headers().get("authorization") == f"Bearer {SYSTEM_KEY}" for r in sent)
        assert all(r.all_headers().get("origin") == other_origin for r in sent)
        _skip_tour(page)
        screenshot(page, "external-ohif")
        watched.clean()
    finally:
        context.close()


# OHIF 3.13's SR viewport throws on a content item without a Concept Name (valid: PS3.3 makes it
# Type 1C; pydicom's test-SR.dcm has such CONTAINER and IMAGE items) and shows its error page for
# that study. The data is right and is not altered to suit the viewer: docs/viewer.md lists it.
OHIF_SR_DEFECT = "Cannot destructure property 'CodeValue' of 'ConceptNameCodeSequence'"


def test_every_study_of_the_archive_opens_with_its_series_panel(chromium, archive_server):
    """pydicom's test data as it is: studies without Modality, SR, SEG, RT, ECG, images stripped of
    their pixel data. Each opens with its series listed; what fails is explained by the data."""
    server, _, _ = archive_server
    studies = [s["0020000D"]["Value"][0] for s in requests.get(
        server.dicomweb + "/studies?limit=1000", headers={"Authorization": SYSTEM_KEY}, timeout=30).json()]
    assert len(studies) > 30
    with signed_in(chromium, server) as watched:
        page = watched.page
        unopened, opened_at = {}, []
        for study in studies:
            errors_before = len(watched.errors)
            opened_at.append((errors_before, study))
            page.goto(f"{server.base}/viewer/viewer?StudyInstanceUIDs={study}")
            try:
                page.wait_for_selector("[data-cy=series-modality-label]", state="attached", timeout=15_000)
            except Exception:   # noqa: BLE001 - playwright's timeout: said below, with what was logged
                unopened[study] = watched.errors[errors_before:]
        for study, errors in unopened.items():
            assert any(OHIF_SR_DEFECT in e for e in errors), f"{study} did not open: {errors[:3]}"
        assert len(unopened) <= 1
        aborted = set()
        for failure in watched.failed:   # only pixels (frames, a thumbnail) asked of instances that have none
            status, url = failure.split(" ", 1)
            if status == "net::ERR_ABORTED":   # still loading when the next study was opened
                aborted.add(url.removeprefix(server.base))
                continue
            assert status == "404", failure
            again = requests.get(url, headers={"Authorization": SYSTEM_KEY}, timeout=10)
            expected = "there is no image to render here" if "/thumbnail" in url else "no pixel data"
            assert again.status_code == 404 and expected in again.json()["message"], failure
        # OHIF logs an XMLHttpRequest error for a frame of the study it leaves when the next opens
        # (the request aborted, or never sent): seen in about one run in five of the whole suite
        def open_then(index: int) -> str:
            return [study for at, study in opened_at if at <= index][-1]

        unexplained = [e for i, e in enumerate(watched.errors) if OHIF_SR_DEFECT not in e and "404" not in e
                       and "Couldn't retrieve" not in e and not any(path in e for path in aborted)
                       and not ("XMLHttpRequest wadors:" in e and open_then(i) not in e)]
        assert not unexplained, unexplained[:5]


def _stored_video(server) -> str:  # noqa: ANN001
    """The URL of a 4 s 320×240 H.264 video instance (ffmpeg's testsrc2) stored through STOW-RS."""
    from testbed.messages import multipart_body, stow_headers
    from testbed.synthetic import video_instance

    if shutil.which("ffmpeg") is None:
        if in_ci():
            pytest.fail("ffmpeg is not installed; make test installs it")
        pytest.skip("ffmpeg is not installed (make test installs it)")
    data = video_instance(generate_uid(), generate_uid(), "h264-mp4", seconds=4.0, width=320, height=240, rate=25)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert requests.post(server.dicomweb + "/studies", data=multipart_body([data]), timeout=60, headers={
        "Authorization": f"Bearer {SYSTEM_KEY}", **stow_headers()}).status_code == 200
    return f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_a_video_plays_and_seeks_in_the_browser_by_byte_ranges(chromium, archive_server):
    """A video instance's …/rendered in a <video> element of a signed-in page: Chromium reads its
    length, seeks by byte ranges, and the frame it shows there is the one the server renders."""
    server, _, _ = archive_server
    url = _stored_video(server)
    with signed_in(chromium, server) as watched:
        page = watched.page
        ranges = []
        page.on("request", lambda request: ranges.append(request.headers.get("range"))
                if request.url == url + "/rendered" else None)
        shown = page.evaluate("""async (source) => {
            const video = document.createElement("video");
            video.muted = true;
            video.style = "position:fixed;top:0;left:0;z-index:10000;width:640px;border:4px solid red";
            video.src = source;
            document.body.appendChild(video);
            await new Promise((ok, fail) => { video.onloadeddata = ok; video.onerror = () => fail(video.error.message); });
            const duration = video.duration;
            video.currentTime = 3.0;
            await new Promise((ok) => { video.onseeked = ok; });
            const canvas = document.createElement("canvas");
            canvas.width = video.videoWidth; canvas.height = video.videoHeight;
            canvas.getContext("2d").drawImage(video, 0, 0);
            return {duration, width: video.videoWidth, height: video.videoHeight, frame: canvas.toDataURL("image/png")};
        }""", url + "/rendered")
        screenshot(page, "video")
        assert shown["duration"] == pytest.approx(4.0, abs=0.1) and (shown["width"], shown["height"]) == (320, 240)
        assert any(value and value.startswith("bytes=") for value in ranges), ranges   # it asked for ranges
        browser = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown["frame"].split(",", 1)[1]))).convert("L"), float)
        ours = {number: np.asarray(Image.open(io.BytesIO(requests.get(
            f"{url}/frames/{number}/rendered", headers={"Authorization": f"Bearer {SYSTEM_KEY}", "Accept": "image/png"},
            timeout=60).content)).convert("L"), float) for number in (76, 26)}
        # testsrc2 moves and counts: the frame at 3 s (76) is the one shown, not the one at 1 s
        assert np.abs(browser - ours[76]).mean() < 6 < np.abs(browser - ours[26]).mean()
        watched.clean()


VIDEO_CANVAS = "[data-cy=viewport-pane] canvas"   # a video viewport's canvas is not a cornerstone-canvas


def test_ohif_shows_a_video_study_from_its_rendered_stream(chromium, archive_server):
    """OHIF's video viewport (its dicom-video extension, which tells a video by the Available
    Transfer Syntax UID our metadata gives) loads the stream from our …/rendered and shows its
    first frame: the one the server renders as frame 1, not a later one."""
    server, _, _ = archive_server
    url = _stored_video(server)
    study = url.split("/studies/")[1].split("/")[0]
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.goto(f"{server.base}/viewer/viewer?StudyInstanceUIDs={study}")
        _wait_for_picture(page, VIDEO_CANVAS)
        page.wait_for_timeout(1000)
        _skip_tour(page)
        screenshot(page, "viewer-video")
        assert any(r.url == url + "/rendered" for r in watched.requests), [r.url for r in watched.requests]
        shown = _fitted(_canvas_pixels(page, VIDEO_CANVAS), 240, 320)

        def like(number: int) -> float:
            ours = requests.get(f"{url}/frames/{number}/rendered", timeout=30,
                                headers={"Authorization": SYSTEM_KEY, "Accept": "image/png"})
            return _rank_correlation(shown, np.asarray(Image.open(io.BytesIO(ours.content)).convert("L"), float))
        first, later = like(1), like(60)
        assert first > 0.9 and first > later + 0.05, (first, later)
        watched.clean()


# A peer's documents, each trying to run on our origin with the signed-in person's session:
# each script asks for /health?pwned-… (a request the test sees), then reads the archive.
HOSTILE_DOCUMENTS = [
    ("text/html", "1.2.840.10008.5.1.4.1.1.104.1",
     b"<html><body><script>fetch('/health?pwned-html');fetch('/dicom-web/studies')</script>"
     b"<img src=x onerror=\"fetch('/health?pwned-html-img')\"></body></html>"),
    ("image/svg+xml", "1.2.840.10008.5.1.4.1.1.104.1",
     b'<svg xmlns="http://www.w3.org/2000/svg" onload="fetch(\'/health?pwned-svg-onload\')">'
     b"<script>fetch('/health?pwned-svg')</script></svg>"),
    (None, "1.2.840.10008.5.1.4.1.1.104.2",   # a CDA-class instance whose XML is XHTML
     b'<html xmlns="http://www.w3.org/1999/xhtml"><body><script>fetch("/health?pwned-xml")</script></body></html>'),
]


def _stored_document(server, mime: str | None, sop_class: str, document: bytes) -> str:
    from testbed.messages import multipart_body, stow_headers
    from tests.test_documents import document_instance

    study, series, sop, data = document_instance(document, sop_class, mime=mime)
    assert requests.post(server.dicomweb + "/studies", data=multipart_body([data]), timeout=60, headers={
        "Authorization": f"Bearer {SYSTEM_KEY}", **stow_headers()}).status_code == 200
    return f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}/rendered"


def test_a_peers_document_never_runs_on_the_viewers_origin(chromium, archive_server):
    """Opened by a signed-in person, a peer's HTML, SVG and XHTML documents run nothing: the HTML
    and the SVG come as downloads (application/octet-stream, an attachment, sandboxed besides);
    the XHTML of a CDA-class instance, asked for as a browser asks (text/html first), is a 406
    (it is no CDA to make readable). Before, each ran with the person's session."""
    server, _, _ = archive_server
    urls = [_stored_document(server, *hostile) for hostile in HOSTILE_DOCUMENTS]
    with signed_in(chromium, server) as watched:
        asked: list[str] = []
        watched.page.context.on("request", lambda request: asked.append(request.url))
        downloaded, statuses = [], {}
        for url in urls:   # a tab a document: Chromium holds back a tab's second automatic download
            tab = watched.page.context.new_page()
            tab.on("download", lambda download: downloaded.append(download.suggested_filename))
            tab.on("response", lambda response: statuses.update({response.url: response.status}))
            try:
                tab.goto(url)
            except Exception as exc:   # Playwright's way of saying the navigation became a download
                assert "Download is starting" in str(exc), exc
            tab.wait_for_timeout(1000)
            screenshot(tab, "hostile-document")
        assert not [url for url in asked if "pwned" in url], asked
        assert not [url for url in asked if url.endswith("/dicom-web/studies")], asked
        assert {url.split("/")[-2] for url in urls[:2]} <= set(downloaded), downloaded
        assert statuses[urls[2]] == 406


def test_pdfs_reports_and_videos_still_show_sandboxed(chromium, archive_server):
    """What is passive is shown as itself under the policy its kind needs: a PDF in Chromium's
    viewer, a report as a readable page (its style applied), a video playing in its own document."""
    from tests.test_documents import a_pdf
    from testbed.synthetic import measurement_report

    server, _, _ = archive_server
    pdf = _stored_document(server, "application/pdf", "1.2.840.10008.5.1.4.1.1.104.1", a_pdf())
    report = measurement_report(generate_uid(), [(generate_uid(), generate_uid())], measurements=2)
    from testbed.messages import multipart_body, stow_headers
    assert requests.post(server.dicomweb + "/studies", data=multipart_body([report]), timeout=60, headers={
        "Authorization": f"Bearer {SYSTEM_KEY}", **stow_headers()}).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(report))
    report_url = (f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  f"/instances/{ds.SOPInstanceUID}/rendered")
    video = _stored_video(server) + "/rendered"
    with signed_in(chromium, server) as watched:
        page = watched.page
        page.goto(pdf)
        page.wait_for_timeout(1500)
        assert page.locator("embed[type='application/pdf']").count() or page.evaluate(
            "() => document.contentType") == "application/pdf"
        screenshot(page, "sandboxed-pdf")
        page.goto(report_url)
        assert page.locator("h1").first.inner_text()
        assert page.evaluate("() => getComputedStyle(document.body).fontFamily") != ""   # its inline style applies
        screenshot(page, "sandboxed-report")
        page.goto(video)
        played = page.evaluate("""async () => {
            const video = document.querySelector('video');
            video.muted = true;
            if (video.readyState < 2) await new Promise((ok, fail) => { video.onloadeddata = ok; video.onerror = fail; });
            return [video.readyState, video.videoWidth];
        }""")
        assert played[0] >= 2 and played[1] == 320, played
        screenshot(page, "sandboxed-video")
