import io
import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service.wire.dicom_xml import NAMESPACE
from tests.conftest import make_config
from testbed.messages import multipart_body, stow_headers

URL = "/dicom-web/studies"


def test_store_all_ok(client):
    study, series = generate_uid(), generate_uid()
    parts = [ct_instance(study, series, number=n) for n in range(3)]
    r = client.post(URL, data=multipart_body(parts), headers=stow_headers())
    assert r.status_code == 200, r.data
    assert r.mimetype == "application/dicom+json"
    body = r.get_json()
    assert "00081198" not in body
    assert body["00081190"]["Value"] == [f"http://localhost/dicom-web/studies/{study}"]
    refs = body["00081199"]["Value"]
    assert len(refs) == 3
    assert all(ref["00081190"]["Value"][0].startswith(f"http://localhost/dicom-web/studies/{study}/series/{series}/")
               for ref in refs)


def test_partial_failure_is_202_with_reasons(client):
    good = ct_instance(generate_uid(), generate_uid())
    r = client.post(URL, data=multipart_body([good, b"garbage bytes", good[: len(good) // 3]]), headers=stow_headers())
    assert r.status_code == 202
    body = r.get_json()
    assert len(body["00081199"]["Value"]) == 1
    reasons = [item["00081197"]["Value"][0] for item in body["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000]
    assert len(r.headers.getlist("Warning")) == 2


def test_all_failed_is_409(client):
    r = client.post(URL, data=multipart_body([b"x", b"y"]), headers=stow_headers())
    assert r.status_code == 409
    assert "00081199" not in r.get_json()


def test_study_in_url_must_match(client):
    study = generate_uid()
    match, other = ct_instance(study, generate_uid()), ct_instance(generate_uid(), generate_uid())
    r = client.post(f"{URL}/{study}", data=multipart_body([match, other]), headers=stow_headers())
    assert r.status_code == 202
    failed = r.get_json()["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xA900]
    assert r.get_json()["00081190"]["Value"] == [f"http://localhost/dicom-web/studies/{study}"]


def test_single_part_application_dicom(client):
    r = client.post(URL, data=ct_instance(generate_uid(), generate_uid()), content_type="application/dicom")
    assert r.status_code == 200


@pytest.mark.parametrize("content_type", [
    "multipart/related; type=application/dicom; boundary=test-boundary",
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; boundary="test-boundary"',
    "Multipart/Related; Type=Application/DICOM; Boundary=test-boundary",
])
def test_content_type_variants(client, content_type):
    body = multipart_body([ct_instance(generate_uid(), generate_uid())])
    assert client.post(URL, data=body, content_type=content_type).status_code == 200


@pytest.mark.parametrize("content_type, status", [
    ("application/json", 415),
    ("text/plain", 415),
    ('multipart/related; type="application/dicom+json"; boundary=b', 400),   # no metadata part
    ('multipart/related; type="image/jpeg"; boundary=b', 415),
    ("multipart/related; type=application/dicom", 400),
    ("not a media type", 400),
    (None, 415),
])
def test_bad_content_types(client, content_type, status):
    r = client.post(URL, data=b"--b\r\n\r\nx\r\n--b--", headers={"Content-Type": content_type} if content_type else {})
    assert r.status_code == status
    assert r.get_json()["message"]


@pytest.mark.parametrize("body", [b"", b"no boundary here", b"--test-boundary\r\nContent-Type: application/dicom\r\n\r\nabc",
                                  b"--test-boundary--\r\n"])
def test_malformed_bodies_are_400(client, body):
    r = client.post(URL, data=body, headers=stow_headers())
    assert r.status_code == 400, r.data


def test_truncated_body_after_a_stored_part(client):
    good = ct_instance(generate_uid(), generate_uid())
    body = multipart_body([good, good])[:-200]
    r = client.post(URL, data=body, headers=stow_headers())
    assert r.status_code == 202
    assert len(r.get_json()["00081198"]["Value"]) == 1


def test_part_of_another_type_fails_alone(client):
    good = ct_instance(generate_uid(), generate_uid())
    body = multipart_body([good]) [:-len(b"--test-boundary--\r\n")] + (
        b"--test-boundary\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\r\n--test-boundary--\r\n")
    r = client.post(URL, data=body, headers=stow_headers())
    assert r.status_code == 202


def test_uid_in_url_is_validated(client):
    r = client.post(f"{URL}/1.2.abc", data=b"", headers=stow_headers())
    assert r.status_code == 400 and "not a valid DICOM UID" in r.get_json()["message"]


def test_size_limit(tmp_path):
    from service import create_app

    app = create_app(make_config(tmp_path, auth_enabled=False, max_request_bytes=1000))
    client = app.test_client()
    big = ct_instance(generate_uid(), generate_uid())
    r = client.post(URL, data=multipart_body([big]), headers=stow_headers())
    assert r.status_code == 413

    # Chunked, with no Content-Length: counted while reading.
    r = client.post(URL, input_stream=io.BytesIO(multipart_body([big])), headers=stow_headers(),
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413


def test_xml_response(client):
    r = client.post(URL, data=multipart_body([ct_instance(generate_uid(), generate_uid()), b"bad"]),
                    headers={**stow_headers(), "Accept": "application/dicom+xml"})
    assert r.status_code == 202 and r.mimetype == "application/dicom+xml"
    import xml.etree.ElementTree as ET

    root = ET.fromstring(r.data)
    ns = {"d": NAMESPACE}
    assert root.find("d:DicomAttribute[@tag='00081199']/d:Item/d:DicomAttribute[@tag='00081190']/d:Value", ns) is not None
    reason = root.find("d:DicomAttribute[@tag='00081198']/d:Item/d:DicomAttribute[@tag='00081197']/d:Value", ns)
    assert reason.text == str(0xC000)


def test_unacceptable_response_type(client):
    r = client.post(URL, data=b"", headers={**stow_headers(), "Accept": "text/html"})
    assert r.status_code == 406


def test_pydicom_test_files(client):
    """Every pydicom test file is either stored or refused with a reason; none makes a 500."""
    from tests.conftest import pydicom_test_files

    for path in pydicom_test_files():
        r = client.post(URL, data=multipart_body([path.read_bytes()]), headers=stow_headers())
        assert r.status_code in (200, 409), (path.name, r.status_code, r.data[:300])
        if r.status_code == 409:
            json.dumps(r.get_json())
            assert r.get_json()["00081198"]["Value"][0]["00081197"]["Value"][0] in (0xC000, 0xA900, 0x0111), path.name


def test_more_parts_than_one_catalog_batch(client):
    from service.store.stow_rs import BATCH_SIZE

    study, series = generate_uid(), [generate_uid() for _ in range(4)]
    parts = [ct_instance(study, series[n % 4], number=n, rows=8, columns=8) for n in range(BATCH_SIZE + 15)]
    parts[BATCH_SIZE + 3] = b"not dicom"
    r = client.post(URL, data=multipart_body(parts), headers=stow_headers())
    assert r.status_code == 202
    body = r.get_json()
    assert len(body["00081198"]["Value"]) == 1
    stored_uids = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
    assert stored_uids == [str(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID) for p in parts if p != b"not dicom"]
    retrieved = client.get(f"{URL}/{study}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                                "transfer-syntax=*"})
    assert retrieved.data.count(b"Content-Location: ") == len(parts) - 1


def test_warning_headers_are_safe_whatever_the_message():
    from service.web import warning

    value = warning('part: bad "value"\r\nX-Injected: 1 \u00e9\\')
    assert value.startswith('299 dicomweb "part: bad ?value?') and "\r" not in value and "\n" not in value
    assert value.count('"') == 2 and value.isascii()


def test_large_parts_spool_to_disk_and_leave_nothing_behind(tmp_path):
    from service import create_app

    config = make_config(tmp_path, auth_enabled=False, spool_memory_bytes=64 * 1024)
    client = create_app(config).test_client()
    study = generate_uid()
    big = ct_instance(study, generate_uid(), rows=1024, columns=1024)  # 2 MiB of pixels
    r = client.post(URL, data=multipart_body([big, big[:-4000], b"junk"]), headers=stow_headers())
    assert r.status_code == 202
    assert list(config.spool_dir.iterdir()) == []
    got = client.get(f"{URL}/{study}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                          "transfer-syntax=*"})
    assert big in got.data
