"""Storage Commitment (PS3.18 chapter 13): 1,000 instances asked, the missing, the tampered and
the wrong-class ones failed with their reasons, results kept across restarts for the peer that
asked; on SQLite and PostgreSQL."""

import orjson
import pytest
from pydicom.uid import generate_uid

from service import create_app
from service.config import Peer, hash_key
from service.wire.dicom_xml import json_to_xml, xml_to_json
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import CT_IMAGE_STORAGE, ct_instance
from tests.conftest import API_KEY, PEER, make_config, sweep_days_later

OTHER_KEY = "another-peer-key-0123456789"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def config(tmp_path, catalog_url):
    return make_config(tmp_path, catalog_url=catalog_url,
                       peers=(Peer(PEER, hash_key(API_KEY)), Peer("other", hash_key(OTHER_KEY))))


def request_body(references):
    return orjson.dumps({"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": [sop_class]}, "00081155": {"vr": "UI", "Value": [uid]}}
        for sop_class, uid in references]}})


def commit(client, transaction, body, content_type="application/dicom+json", **headers):
    return client.post(f"/dicom-web/commitment-requests/{transaction}", data=body,
                       headers={"Content-Type": content_type, **headers})


def sequence(result, tag):
    return [(item["00081150"]["Value"][0], item["00081155"]["Value"][0], item.get("00081197", {}).get("Value", [None])[0])
            for item in result[tag]["Value"]]


def test_a_thousand_instances_committed_but_the_missing_the_tampered_and_the_wrong_class(client, app, config):
    study, series = generate_uid(), generate_uid()
    parts = [ct_instance(study, series, number=n, rows=4, columns=4) for n in range(1, 1001)]
    for start in range(0, 1000, 250):
        assert client.post("/dicom-web/studies", data=multipart_body(parts[start:start + 250]),
                           headers=stow_headers()).status_code == 200
    held = sorted(i["00080018"]["Value"][0] for i in
                  client.get(f"/dicom-web/studies/{study}/instances?limit=1000").get_json())
    archive = app.extensions["archive"]
    tampered = archive.instances(study, series, held[0])[0]
    path = archive._blobs._path(tampered.blob_key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF   # one pixel byte changed on disk behind the archive's back
    path.write_bytes(bytes(data))
    missing = generate_uid()
    references = [(CT_IMAGE_STORAGE, uid) for uid in held[:998]] + [(MR_IMAGE_STORAGE, held[998]),
                                                                   (CT_IMAGE_STORAGE, held[999]),
                                                                   (CT_IMAGE_STORAGE, missing)]
    transaction = generate_uid()
    r = commit(client, transaction, request_body(references))
    assert r.status_code == 200 and r.mimetype == "application/dicom+json"
    result = r.get_json()
    assert "00081195" not in result   # the Transaction UID is the resource's, not in the payload
    committed = {uid for _, uid, _ in sequence(result, "00081199")}
    assert committed == set(held[1:998]) | {held[999]}
    assert sorted(sequence(result, "00081198")) == sorted([(CT_IMAGE_STORAGE, held[0], 0x0110),
                                                           (MR_IMAGE_STORAGE, held[998], 0x0119),
                                                           (CT_IMAGE_STORAGE, missing, 0x0112)])
    # The result again, from an app started anew on the same catalog, as XML too.
    again = create_app(config).test_client()
    kept = again.get(f"/dicom-web/commitment-requests/{transaction}", headers={"Authorization": API_KEY})
    assert kept.status_code == 200 and kept.get_json() == result
    as_xml = again.get(f"/dicom-web/commitment-requests/{transaction}",
                       headers={"Authorization": API_KEY, "Accept": "application/dicom+xml"})
    assert as_xml.mimetype == "application/dicom+xml" and len(xml_to_json(as_xml.data)["00081198"]["Value"]) == 3


def test_transactions_are_unique_and_kept_from_other_peers(client, study_of_one):
    sop = study_of_one
    transaction = generate_uid()
    body = request_body([(CT_IMAGE_STORAGE, sop)])
    assert commit(client, transaction, body).status_code == 200
    again = commit(client, transaction, body)
    assert again.status_code == 409 and transaction in again.get_json()["message"]
    other = client.get(f"/dicom-web/commitment-requests/{transaction}", headers={"Authorization": OTHER_KEY})
    assert other.status_code == 404
    assert client.get(f"/dicom-web/commitment-requests/{generate_uid()}").status_code == 404


@pytest.fixture
def study_of_one(client):
    data = ct_instance(generate_uid(), generate_uid(), rows=4, columns=4)
    assert client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers()).status_code == 200
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_an_xml_request_is_read_too(client, study_of_one):
    model = orjson.loads(request_body([(CT_IMAGE_STORAGE, study_of_one)]))
    r = commit(client, generate_uid(), json_to_xml(model), "application/dicom+xml")
    assert r.status_code == 200 and len(r.get_json()["00081199"]["Value"]) == 1


@pytest.mark.parametrize("body, content_type, status, says", [
    (b"{not json", "application/dicom+json", 400, "not a DICOM JSON"),
    (b"{}", "application/dicom+json", 400, "00081199"),
    (orjson.dumps({"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]}}]}}),
     "application/dicom+json", 400, "item 1"),
    (orjson.dumps({"00081199": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2"]},
                                                       "00081155": {"vr": "UI", "Value": ["1..2"]}}]}}),
     "application/dicom+json", 400, "Referenced SOP Instance UID"),
    (b"<x/>", "text/plain", 415, "application/dicom+json"),
    (b"<NativeDicomModel><DicomAttribute", "application/dicom+xml", 400, "not a DICOM XML"),   # truncated
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "application/dicom+xml", 400, "EntitiesForbidden"),
    (b"x" * (9 << 20), "application/dicom+json", 413, "8388608 bytes"),
    # The Referenced SOP Sequence as a string, as a string Value, with a string item: 500s before
    (orjson.dumps({"00081199": "1.2.3"}), "application/dicom+json", 400, "00081199 is not an object"),
    (orjson.dumps({"00081199": {"vr": "SQ", "Value": "1.2.3"}}), "application/dicom+json", 400, "not an array"),
    (orjson.dumps({"00081199": {"vr": "SQ", "Value": ["1.2.3"]}}), "application/dicom+json", 400, "not an object"),
    (orjson.dumps(["1.2.3"]), "application/dicom+json", 400, "JSON object of attributes"),
    (b"{}", "application/dicom+json;;q=x", 400, "Content-Type"),
    (request_body([(CT_IMAGE_STORAGE, f"1.2.{n}") for n in range(10_001)]), "application/dicom+json", 413, "10000"),
])
def test_malformed_requests_get_4xx(client, body, content_type, status, says):
    r = commit(client, generate_uid(), body, content_type)
    assert r.status_code == status and says in r.get_json()["message"]


def test_a_malformed_transaction_uid_and_another_accept(client, study_of_one):
    assert commit(client, "1..2", request_body([(CT_IMAGE_STORAGE, study_of_one)])).status_code == 400
    r = commit(client, generate_uid(), request_body([(CT_IMAGE_STORAGE, study_of_one)]), Accept="image/png")
    assert r.status_code == 406


def test_the_sweep_forgets_old_results(client, study_of_one, monkeypatch, config):
    transaction = generate_uid()
    commit(client, transaction, request_body([(CT_IMAGE_STORAGE, study_of_one)]))
    output = sweep_days_later(monkeypatch, config, 8)
    assert "forgot 1 Storage Commitment result(s)" in output
    assert client.get(f"/dicom-web/commitment-requests/{transaction}").status_code == 404
