"""The NCPeH facade: searches and retrieves answered from upstream DICOMweb origins (a second
instance of this server, a slow one and a dead one), merged with the local archive."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service import create_app
from service.config import Config
from service.search.qido_params import parse_query
from tests.conftest import API_KEY, free_port, make_config
from testbed.messages import multipart_body, read, slow_upstream, split_multipart, stow_headers
from testbed.server import Server

UPSTREAM_KEY = "upstream-key-0123456789"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    work = tmp_path_factory.mktemp("upstream")
    server = Server({"DICOMWEB_DATA_DIR": str(work), "DICOMWEB_API_KEY": UPSTREAM_KEY,
                     "DICOMWEB_PUBLIC_URL": "http://national-pacs.invalid/dicom-web"}, free_port(), work / "log")
    slow = slow_upstream(3)
    yield server, slow
    slow.shutdown()
    server.stop()


@pytest.fixture
def facade(tmp_path, upstream):
    server, slow = upstream
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([
        {"name": "national-pacs", "url": server.dicomweb, "api_key": UPSTREAM_KEY, "timeout": 5},
        {"name": "slow-region", "url": f"http://127.0.0.1:{slow.server_port}/dicom-web", "timeout": 0.5,
         "serves": ["search"]},
        {"name": "dead-region", "url": f"http://127.0.0.1:{free_port()}/dicom-web", "timeout": 0.5},
    ]))
    app = create_app(make_config(tmp_path, upstreams_file=path))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    return client, server


def upstream_store(server, datas):
    r = requests.post(server.dicomweb + "/studies", data=multipart_body(datas),
                      headers={"Authorization": f"ApiKey {UPSTREAM_KEY}", **stow_headers()})
    assert r.status_code == 200


def test_search_merges_upstreams_and_names_the_failing_ones(facade):
    client, server = facade
    remote, local, both = generate_uid(), generate_uid(), generate_uid()
    upstream_store(server, [ct_instance(remote, generate_uid(), rows=8, columns=8, patient_id="EU-1"),
                            ct_instance(both, generate_uid(), rows=8, columns=8, patient_id="EU-1")])
    client.post("/dicom-web/studies", headers=stow_headers(), data=multipart_body([
        ct_instance(local, generate_uid(), rows=8, columns=8, patient_id="EU-1"),
        ct_instance(both, generate_uid(), rows=8, columns=8, patient_id="EU-1")]))
    start = time.monotonic()
    r = client.get("/dicom-web/studies?PatientID=EU-1")
    assert time.monotonic() - start < 2.5   # the slow upstream is not waited for
    found = {row["0020000D"]["Value"][0]: row for row in r.get_json()}
    assert set(found) == {remote, local, both}   # merged, each study once
    assert all(row["00081190"]["Value"][0].startswith("http://localhost/dicom-web/studies/") for row in found.values())
    assert "national-pacs.invalid" not in r.get_data(as_text=True)
    warnings = " ".join(r.headers.getlist("Warning"))
    assert "slow-region did not answer" in warnings and "dead-region failed" in warnings
    assert UPSTREAM_KEY not in str(r.headers) + r.get_data(as_text=True)
    paged = client.get("/dicom-web/studies?PatientID=EU-1&limit=2&offset=1").get_json()
    ordered = sorted(found)
    assert [row["0020000D"]["Value"][0] for row in paged] == ordered[1:3]


def test_retrieve_streams_from_the_upstream_with_local_negotiation(facade):
    client, server = facade
    study, series = generate_uid(), generate_uid()
    datas = [ct_instance(study, series, number=n, rows=32, columns=32, BitsStored=12) for n in (1, 2)]
    upstream_store(server, datas)
    r = client.get(f"/dicom-web/studies/{study}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'})
    assert r.status_code == 200
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert all(h["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80" for h, _ in parts)
    assert all(h["content-location"].startswith("http://localhost/dicom-web/") for h, _ in parts)
    originals = {read(d).SOPInstanceUID: read(d) for d in datas}
    for _, body in parts:
        ds = read(body)
        assert np.array_equal(ds.pixel_array, originals[ds.SOPInstanceUID].pixel_array)
    as_stored = client.get(f"/dicom-web/studies/{study}/series/{series}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert sorted(b for _, b in split_multipart(as_stored.data, as_stored.headers["Content-Type"])) == sorted(datas)
    assert client.get(f"/dicom-web/studies/{generate_uid()}").status_code == 404


def test_metadata_frames_bulk_and_rendered_are_relayed_with_urls_of_this_server(facade):
    client, server = facade
    study, series = generate_uid(), generate_uid()
    data = ct_instance(study, series, rows=16, columns=16, frames=2)
    upstream_store(server, [data])
    ds = read(data)
    base = f"/dicom-web/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"
    [model] = client.get(f"/dicom-web/studies/{study}/metadata").get_json()
    uri = model["7FE00010"]["BulkDataURI"]
    assert uri.startswith("http://localhost/dicom-web/studies/")   # not the upstream's address
    pixels = client.get(uri.split("localhost", 1)[1], headers={"Accept": "application/octet-stream"})
    assert pixels.status_code == 200 and pixels.data == ds.PixelData
    [(_, frame)] = split_multipart(*(lambda r: (r.data, r.headers["Content-Type"]))(client.get(f"{base}/frames/2")))
    assert frame == ds.pixel_array[1].tobytes()
    assert client.get(f"{base}/rendered").headers["Content-Type"] == "image/jpeg"


def test_anonymised_answers_of_upstream_studies(facade):
    """anonymize=true holds for what the facade relays: instances and metadata are de-identified
    here; frames, bulk data and rendered images, relayed as they come, are refused (400)."""
    client, server = facade
    study, series = generate_uid(), generate_uid()
    datas = [ct_instance(study, series, number=n, rows=8, columns=8, patient_name="Upstream^Secret",
                         patient_id="EU-SECRET-9", InstitutionName="Secret Hospital") for n in (1, 2)]
    upstream_store(server, datas)
    sops = [read(d).SOPInstanceUID for d in datas]
    secrets = [b"Upstream", b"EU-SECRET-9", b"Secret Hospital", study.encode(), series.encode(),
               *(s.encode() for s in sops)]
    r = client.get(f"/dicom-web/studies/{study}?anonymize=true")
    assert r.status_code == 200
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert len(parts) == 2 and all("content-location" not in h for h, _ in parts)
    assert [s for s in secrets if s in r.data] == []
    assert {read(b).PatientIdentityRemoved for _, b in parts} == {"YES"}
    r = client.get(f"/dicom-web/studies/{study}/metadata?anonymize=true")
    assert r.status_code == 200 and len(r.get_json()) == 2 and [s for s in secrets if s in r.data] == []
    assert all(m["00120062"]["Value"] == ["YES"] for m in r.get_json())
    base = f"/dicom-web/studies/{study}/series/{series}/instances/{sops[0]}"
    for resource in ("/frames/1", "/rendered", "/bulk/7FE00010"):
        r = client.get(f"{base}{resource}?anonymize=true")
        assert r.status_code == 400 and "anonymize" in r.get_json()["message"], resource
    r = client.get(f"{base}/metadata?anonymize=true", headers={"Accept": 'multipart/related; '
                                                                          'type="application/dicom+xml"'})
    assert r.status_code == 400


def test_an_upstream_marked_keep_leaves_a_local_copy(tmp_path, upstream):
    server, _ = upstream
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([{"name": "national-pacs", "url": server.dicomweb, "api_key": UPSTREAM_KEY,
                                 "keep": True}]))
    app = create_app(make_config(tmp_path, upstreams_file=path))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), number=n, rows=8, columns=8) for n in (1, 2)]
    upstream_store(server, datas)
    assert not app.extensions["archive"].instances(study)
    r = client.get(f"/dicom-web/studies/{study}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                                      "transfer-syntax=*"})
    assert len(split_multipart(r.data, r.headers["Content-Type"])) == 2
    kept = app.extensions["archive"].instances(study)
    assert len(kept) == 2   # now served from here


def test_fhir_lists_upstream_studies_too(facade):
    from fhir.resources.R4B.bundle import Bundle

    client, server = facade
    study = generate_uid()
    upstream_store(server, [ct_instance(study, generate_uid(), rows=8, columns=8, patient_id="EU-FHIR")])
    r = client.get("/fhir/ImagingStudy?patient=EU-FHIR")
    bundle = r.get_json()
    Bundle.model_validate(bundle)
    [entry] = bundle["entry"]
    assert entry["resource"]["id"] == study and entry["resource"]["numberOfInstances"] == 1
    assert "slow-region" in " ".join(r.headers.getlist("Warning"))
    address = entry["resource"]["contained"][0]["address"]
    assert address == "http://localhost/dicom-web"   # the facade, which streams it from the upstream
    assert client.get(f"/dicom-web/studies/{study}").status_code == 200


def test_a_bounded_cache_evicts_the_oldest_copies(tmp_path, upstream):
    server, _ = upstream
    path = tmp_path / "upstreams.json"
    size = len(ct_instance(generate_uid(), generate_uid(), rows=16, columns=16))
    path.write_text(json.dumps([{"name": "national-pacs", "url": server.dicomweb, "api_key": UPSTREAM_KEY,
                                 "keep": True, "cache_bytes": int(size * 2.5)}]))
    app = create_app(make_config(tmp_path, upstreams_file=path))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    first, second = generate_uid(), generate_uid()
    for study in (first, second):
        upstream_store(server, [ct_instance(study, generate_uid(), number=n, rows=16, columns=16) for n in (1, 2)])
        client.get(f"/dicom-web/studies/{study}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                                      "transfer-syntax=*"}).get_data()
        time.sleep(0.01)
    archive = app.extensions["archive"]
    assert len(archive.instances(first)) == 0 and len(archive.instances(second)) == 2   # first in, first out
    assert archive.search(parse_query("study", [("StudyInstanceUID", first)], 10)[0])[0] == []   # unsearchable


def partial_upstream(study: str, series: str, datas: list[bytes], missing: str):
    """An upstream whose search lists every instance but which cannot give ``missing``."""
    import http.server
    import threading

    by_uid = {str(read(d).SOPInstanceUID): d for d in datas}

    class Partial(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/instances"):
                listing = [{"0020000E": {"vr": "UI", "Value": [series]}, "00080018": {"vr": "UI", "Value": [uid]}}
                           for uid in by_uid]
                payload, content_type = json.dumps(listing).encode(), "application/dicom+json"
            else:
                uid = path.rsplit("/", 1)[1]
                if uid == missing or uid not in by_uid:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = multipart_body([by_uid[uid]], "up")
                content_type = 'multipart/related; type="application/dicom"; boundary=up'
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_GET(self):   # noqa: N802
            self._answer(True)

        def do_HEAD(self):   # noqa: N802
            self._answer(False)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Partial)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_instances_an_upstream_lists_but_cannot_give_make_a_206(tmp_path):
    study, series = generate_uid(), generate_uid()
    datas = [ct_instance(study, series, number=n, rows=8, columns=8) for n in (1, 2, 3)]
    lost = str(read(datas[1]).SOPInstanceUID)
    upstream = partial_upstream(study, series, datas, lost)
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([{"name": "regional", "url": f"http://127.0.0.1:{upstream.server_port}/dicom-web"}]))
    client = create_app(make_config(tmp_path, upstreams_file=path)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    try:
        r = client.get(f"/dicom-web/studies/{study}", headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        r.get_data()   # the answer streams from the upstream: read it while the upstream runs
    finally:
        upstream.shutdown()
    assert r.status_code == 206 and "1 of 3 instances could not be fetched from upstream regional" in r.headers["Warning"]
    received = [str(read(b).SOPInstanceUID) for _, b in split_multipart(r.data, r.headers["Content-Type"])]
    assert lost not in received and len(received) == 2


def _hostile_upstream(handler):
    """A stand-in upstream on a free loopback port whose GETs ``handler(request)`` answers."""
    import http.server
    import threading

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802
            try:
                handler(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _facade_of(tmp_path, port, **extra):
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps([{"name": "hostile", "url": f"http://127.0.0.1:{port}/dicom-web", "timeout": 1,
                                 "api_key": "secret-upstream-key", **extra}]))
    client = create_app(make_config(tmp_path, upstreams_file=path)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    return client


def test_an_upstream_redirect_is_not_followed(tmp_path):
    """A redirect would take the upstream's credentials to wherever it points."""
    trapped = []
    trap = _hostile_upstream(lambda r: (trapped.append(r.headers.get("Authorization")), r.send_response(200),
                                        r.end_headers(), r.wfile.write(b"[]")))

    def redirect(r):
        r.send_response(302)
        r.send_header("Location", f"http://127.0.0.1:{trap.server_port}{r.path}")
        r.end_headers()

    hostile = _hostile_upstream(redirect)
    try:
        client = _facade_of(tmp_path, hostile.server_port)
        study = generate_uid()
        r = client.get("/dicom-web/studies")
        assert r.status_code == 200 and "hostile failed" in r.headers["Warning"]
        assert client.get(f"/dicom-web/studies/{study}").status_code == 404
        assert client.get(f"/dicom-web/studies/{study}/metadata").status_code == 404
        assert trapped == []
    finally:
        hostile.shutdown()
        trap.shutdown()


def test_upstream_answers_are_bounded(tmp_path):
    """JSON beyond 16 MiB, or trickling beyond four timeouts, is dropped with a Warning; the
    facade answers within its bounds either way."""
    def huge(r):
        r.send_response(200)
        r.send_header("Content-Type", "application/dicom+json")
        r.end_headers()
        r.wfile.write(b"[" + b'{"0020000D":{"vr":"UI","Value":["1.2.3"]}},' * 600_000 + b"{}]")

    def trickle(r):
        r.send_response(200)
        r.send_header("Content-Type", "application/dicom+json")
        r.end_headers()
        r.wfile.write(b"[")
        for _ in range(100):
            time.sleep(0.5)
            r.wfile.write(b" ")

    for handler, expected in ((huge, "failed"), (trickle, "did not answer")):
        hostile = _hostile_upstream(handler)
        try:
            client = _facade_of(tmp_path, hostile.server_port)
            started = time.monotonic()
            r = client.get("/dicom-web/studies")
            assert r.status_code == 200 and r.get_json() == []
            assert expected in r.headers["Warning"] and time.monotonic() - started < 6
            assert client.get(f"/dicom-web/studies/{generate_uid()}/metadata").status_code == 404
        finally:
            hostile.shutdown()


def test_an_upstream_listing_thousands_of_instances_is_checked_at_once(tmp_path):
    """The instances a retrieve will fetch are checked concurrently within the upstream's timeout
    (10,000 sequential HEADs before), and listing no more than MAX_LISTED."""
    MAX_LISTED = Config().upstream_max_listed

    study, series = generate_uid(), generate_uid()
    asked = []

    def listing(r):
        asked.append(r.path)
        if "/instances?" in r.path:
            r.send_response(200)
            r.send_header("Content-Type", "application/dicom+json")
            r.end_headers()
            rows = [{"0020000E": {"vr": "UI", "Value": [series]}, "00080018": {"vr": "UI", "Value": [f"1.2.{n}"]}}
                    for n in range(MAX_LISTED)]
            r.wfile.write(json.dumps(rows).encode())
        else:   # every instance check: slow, then not there
            time.sleep(0.3)
            r.send_response(404)
            r.end_headers()

    hostile = _hostile_upstream(listing)
    try:
        client = _facade_of(tmp_path, hostile.server_port)
        started = time.monotonic()
        r = client.get(f"/dicom-web/studies/{study}")
        assert time.monotonic() - started < 4
        assert r.status_code == 206 and f"{MAX_LISTED} of {MAX_LISTED} instances could not be fetched" \
            in r.headers["Warning"]
        assert f"limit={MAX_LISTED}" in asked[0]
    finally:
        hostile.shutdown()


def test_merge_by_uid_keeps_the_local_result_and_orders_by_uid():
    from service.facade.upstreams import merge_by_uid

    local = [{"uid": "1.3", "from": "here"}, {"uid": "1.1", "from": "here"}]
    answers = [[{"u": "1.3"}, {"u": "1.2"}, {"u": None}], [{"u": "1.2"}, {"u": "1.4"}]]
    merged, added = merge_by_uid(local, answers, lambda r: r["uid"], lambda r: {"uid": r["u"], "from": "upstream"})
    assert [(r["uid"], r["from"]) for r in merged] == [("1.1", "here"), ("1.2", "upstream"), ("1.3", "here"),
                                                     ("1.4", "upstream")]
    assert added == 2
