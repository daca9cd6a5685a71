"""Through a real gunicorn: dicomweb-client and raw HTTP, over disk + SQLite and S3 (moto server) + PostgreSQL."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pydicom
import pydicom.encaps
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from testbed.synthetic import StudySpec, ct_instance, phantom, study as synthetic_study
from tests.conftest import API_KEY, TEST_FILES, free_port, pydicom_test_files
from testbed.messages import read, split_multipart
from testbed.server import Server

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
AUTH = {"Authorization": f"Bearer {API_KEY}"}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e")
    port = free_port()
    # Named by DICOMWEB_PUBLIC_URL, as a deployment may be (the test of URLs without it starts its own).
    server = Server({"DICOMWEB_DATA_DIR": str(data_dir), "DICOMWEB_API_KEY": API_KEY,
                     "DICOMWEB_API_KEY_PERMISSIONS": "read,store,delete",
                     "DICOMWEB_PUBLIC_URL": f"http://127.0.0.1:{port}/dicom-web"}, port, data_dir / "gunicorn.log")
    yield server
    server.stop()


def client_for(server: Server) -> DICOMwebClient:
    return DICOMwebClient(url=server.dicomweb, headers=AUTH)


def streamed_multipart(files: list[bytes], boundary: str):
    """A request body produced piece by piece, so requests sends it chunked."""
    for data in files:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for start in range(0, len(data), 4096):
            yield data[start:start + 4096]
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def test_pydicom_test_files_round_trip(server):
    files = {path.name + str(i): path.read_bytes() for i, path in enumerate(pydicom_test_files())}
    r = requests.post(server.dicomweb + "/studies", data=streamed_multipart(list(files.values()), "b-1"),
                      headers={**AUTH, "Content-Type": 'multipart/related; type="application/dicom"; boundary=b-1'})
    assert r.status_code == 202, r.text[:500]
    body = r.json()
    referenced, failed = body["00081199"]["Value"], body["00081198"]["Value"]
    assert len(referenced) >= 100 and len(referenced) + len(failed) == len(files)
    stored = {item["00081155"]["Value"][0]: item["00081190"]["Value"][0] for item in referenced}
    by_uid = {}
    for data in files.values():
        try:
            by_uid.setdefault(str(read(data).SOPInstanceUID), data)  # the first of duplicates is the one stored
        except Exception:
            continue
    # Study and series level: every stored instance comes back byte for byte, once.
    by_level: dict[str, set[str]] = {}
    for sop_uid, url in stored.items():
        study_url = url.split("/series/")[0]
        series_url = url.split("/instances/")[0]
        by_level.setdefault(study_url, set()).add(sop_uid)
        by_level.setdefault(series_url, set()).add(sop_uid)
    for url, sop_uids in by_level.items():
        r = requests.get(url, headers={**AUTH, "Accept": ANY})
        assert r.status_code == 200
        received = {str(read(b).SOPInstanceUID): b for _, b in split_multipart(r.content, r.headers["Content-Type"])}
        assert set(received) == sop_uids, url
        assert all(received[uid] == by_uid[uid] for uid in sop_uids)

    decoded = 0
    for sop_uid, url in stored.items():
        original = by_uid[sop_uid]
        r = requests.get(url, headers={**AUTH, "Accept": ANY})
        assert r.status_code == 200
        [(headers, body_bytes)] = split_multipart(r.content, r.headers["Content-Type"])
        assert body_bytes == original, sop_uid
        r = requests.get(url, headers=AUTH)
        ts = str(read(original).file_meta.TransferSyntaxUID)
        if ts in UNCOMPRESSED:
            assert r.status_code == 200, (sop_uid, r.text)
            [(headers, converted)] = split_multipart(r.content, r.headers["Content-Type"])
            assert headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")
            a, b = read(original), read(converted)
            assert a.SOPInstanceUID == b.SOPInstanceUID and a.get("PatientName") == b.get("PatientName")
            if "PixelData" in a:
                try:
                    expected = a.pixel_array
                except Exception:  # some test files are broken on purpose (e.g. NumberOfFrames "1A")
                    assert len(a.PixelData) == len(b.PixelData)
                else:
                    assert np.array_equal(expected, b.pixel_array), sop_uid
        else:
            # Compressed: decompressed by default, or 406 (with a reason) for data no decoder reads.
            assert r.status_code in (200, 406), (sop_uid, ts)
            if r.status_code == 406:
                assert "could not be" in r.json()["message"]
                continue
            [(headers, converted)] = split_multipart(r.content, r.headers["Content-Type"])
            assert headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")
            decoded += 1
            if ts == "1.2.840.10008.1.2.4.51" and read(original).BitsStored > 8:
                continue   # 12-bit JPEG: pydicom's plug-ins cannot read the original; DCMTK checks it elsewhere
            assert np.array_equal(read(converted).pixel_array, read(original).pixel_array), sop_uid
    assert decoded >= 15   # compressed test files (17 of the stored ones) decompressed on the way out


def test_dicomweb_client_store_and_retrieve_at_every_level(server):
    client = client_for(server)
    spec = StudySpec(series=2, instances_per_series=4, rows=128, columns=128)
    instances = list(synthetic_study(spec))
    datasets = [read(data) for *_, data in instances]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 8 and "FailedSOPSequence" not in result
    study_uid = instances[0][0]
    series_uid = instances[0][1]

    study = client.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in study) == sorted(ds.SOPInstanceUID for ds in datasets)
    originals = {ds.SOPInstanceUID: ds for ds in datasets}
    for ds in study:
        assert np.array_equal(ds.pixel_array, originals[ds.SOPInstanceUID].pixel_array)
        assert ds.PatientName == originals[ds.SOPInstanceUID].PatientName

    series = client.retrieve_series(study_uid, series_uid)
    assert len(series) == 4 and {ds.SeriesInstanceUID for ds in series} == {series_uid}

    sop_uid = instances[0][2]
    instance = client.retrieve_instance(study_uid, series_uid, sop_uid)
    assert instance.SOPInstanceUID == sop_uid
    as_stored = client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_dicomweb_client_transcodes_through_gunicorn(server):
    """What a viewer or gateway asks of a real server: instances in a compressed syntax,
    frames decoded, frames encoded in another syntax, with dicomweb-client's own negotiation."""
    from transcode.codecs import PixelDescription, decode_frame

    client = client_for(server)
    study_uid, series_uid = generate_uid(), generate_uid()
    data = ct_instance(study_uid, series_uid, rows=96, columns=80, frames=3, pixels=phantom(96, 80)[None].repeat(3, 0))
    jpeg2000 = read((TEST_FILES / "MR_small_jp2klossless.dcm").read_bytes())
    # Other tests here store pydicom's MR_small variants, which share their UIDs: this one gets its own.
    jpeg2000.StudyInstanceUID, jpeg2000.SeriesInstanceUID = study_uid, generate_uid()
    jpeg2000.SOPInstanceUID = jpeg2000.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    client.store_instances([read(data), jpeg2000])
    original = read(data)
    sop_uid = original.SOPInstanceUID

    for syntax in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70",
                   "1.2.840.10008.1.2.5"):
        got = client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=(("application/dicom", syntax),))
        assert got.file_meta.TransferSyntaxUID == syntax
        assert np.array_equal(got.pixel_array, original.pixel_array)
    series = client.retrieve_series(study_uid, series_uid, media_types=(("application/dicom", "1.2.840.10008.1.2.4.81"),))
    assert [ds.file_meta.TransferSyntaxUID for ds in series] == ["1.2.840.10008.1.2.4.81"]
    assert series[0].LossyImageCompression == "01"

    frames = client.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[3, 1],
                                             media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),))
    description = PixelDescription.from_dataset(original)
    assert [decode_frame(f, description, "1.2.840.10008.1.2.4.80")[0] for f in frames] == \
        [original.pixel_array[2].tobytes(), original.pixel_array[0].tobytes()]
    decoded = client.retrieve_instance_frames(jpeg2000.StudyInstanceUID, jpeg2000.SeriesInstanceUID,
                                              jpeg2000.SOPInstanceUID, frame_numbers=[1],
                                              media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert decoded == [jpeg2000.pixel_array.astype("<i2").tobytes()]
    as_stored = client.retrieve_instance_frames(jpeg2000.StudyInstanceUID, jpeg2000.SeriesInstanceUID,
                                                jpeg2000.SOPInstanceUID, frame_numbers=[1],
                                                media_types=(("image/jp2", "1.2.840.10008.1.2.4.90"),))
    assert as_stored == list(pydicom.encaps.generate_frames(jpeg2000.PixelData, number_of_frames=1))


def test_rendered_wado_uri_and_anonymised_through_gunicorn(server):
    """A browser's and an older client's requests, raw: rendered JPEG, thumbnail with ETag,
    WADO-URI image and DICOM, an anonymised series."""
    from PIL import Image

    client = client_for(server)
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [read(ct_instance(study_uid, series_uid, number=n, rows=64, columns=64, pixels=phantom(64, 64)))
                for n in (1, 2, 3)]
    client.store_instances(datasets)
    sop = datasets[0].SOPInstanceUID
    base = f"{server.dicomweb}/studies/{study_uid}/series/{series_uid}"
    r = requests.get(f"{base}/instances/{sop}/rendered?window=40,400&viewport=32,32", headers=AUTH)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)
    r = requests.get(f"{base}/rendered", headers={**AUTH, "Accept": 'multipart/related; type="image/png"'})
    assert len(split_multipart(r.content, r.headers["Content-Type"])) == 3
    thumb = requests.get(f"{base}/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.headers["ETag"]
    assert requests.get(f"{base}/thumbnail", headers={**AUTH, "If-None-Match": thumb.headers["ETag"]}).status_code == 304
    query = f"requestType=WADO&studyUID={study_uid}&seriesUID={series_uid}&objectUID={sop}"
    root = server.dicomweb.rsplit("/dicom-web", 1)[0]
    r = requests.get(f"{root}/wado?{query}&contentType=image/png&rows=16", headers=AUTH)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (16, 16)
    r = requests.get(f"{server.dicomweb}/wado?{query}&contentType=application/dicom&anonymize=yes", headers=AUTH)
    anonymised = read(r.content)
    assert anonymised.PatientIdentityRemoved == "YES" and anonymised.SOPInstanceUID != sop
    series = client.retrieve_series(study_uid, series_uid, additional_params={"anonymize": "true"})
    assert {ds.PatientName for ds in series} != {datasets[0].PatientName} and len(series) == 3
    assert len({ds.SeriesInstanceUID for ds in series}) == 1


def test_implicit_vr_upload_is_sent_back_explicit(server):
    client = client_for(server)
    study_uid, series_uid = generate_uid(), generate_uid()
    data = ct_instance(study_uid, series_uid, transfer_syntax=ImplicitVRLittleEndian)
    r = requests.post(server.dicomweb + f"/studies/{study_uid}", data=data,
                      headers={**AUTH, "Content-Type": "application/dicom"})
    assert r.status_code == 200
    [ds] = client.retrieve_study(study_uid)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, read(data).pixel_array)


@pytest.mark.parametrize("headers, body, status", [
    ({}, b"", 401),
    ({"Authorization": "Bearer wrong"}, b"", 401),
    ({**AUTH, "Content-Type": "application/json"}, b"{}", 415),
    ({**AUTH, "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}, b"garbage", 400),
])
def test_bad_requests(server, headers, body, status):
    r = requests.post(server.dicomweb + "/studies", data=body, headers=headers)
    assert r.status_code == status
    assert r.json()["message"]


def test_bad_parts_and_mismatched_study(server):
    study_uid = generate_uid()
    good = ct_instance(study_uid, generate_uid())
    parts = [good, b"garbage", good[:-500], ct_instance(generate_uid(), generate_uid())]
    r = requests.post(server.dicomweb + f"/studies/{study_uid}", data=streamed_multipart(parts, "q"),
                      headers={**AUTH, "Content-Type": 'multipart/related; type="application/dicom"; boundary=q'})
    assert r.status_code == 202
    reasons = [item["00081197"]["Value"][0] for item in r.json()["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000, 0xA900]
    assert requests.get(server.dicomweb + "/studies/1.2.x", headers=AUTH).status_code == 400
    assert requests.get(server.dicomweb + f"/studies/{generate_uid()}", headers=AUTH).status_code == 404


def test_audit_log_records_peer_and_study(server):
    study_uid = generate_uid()
    requests.post(server.dicomweb + "/studies", data=ct_instance(study_uid, generate_uid()),
                  headers={**AUTH, "Content-Type": "application/dicom"})
    r = requests.get(server.dicomweb + f"/studies/{study_uid}", headers={**AUTH, "Accept": ANY})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        match = [line for line in lines if line["study"] == study_uid and line["method"] == "GET"]
        if match:
            break
        time.sleep(0.1)
    assert match[0]["peer"] == "default" and match[0]["bytes_sent"] == len(r.content)
    assert API_KEY not in server.log()


def test_s3_and_postgresql_backend(tmp_path, moto_server, postgres_url, aws_env):
    import boto3
    import os

    bucket = f"e2e{time.time_ns()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    env = {"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_API_KEY": API_KEY,
           "DICOMWEB_STORAGE": f"s3://{bucket}/archive", "DICOMWEB_S3_ENDPOINT_URL": moto_server,
           "DICOMWEB_CATALOG_URL": postgres_url,
           **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}}
    server = Server(env, free_port(), tmp_path / "gunicorn.log")
    try:
        client = client_for(server)
        instances = list(synthetic_study(StudySpec(series=1, instances_per_series=3, rows=64, columns=64)))
        client.store_instances([read(data) for *_, data in instances])
        r = requests.get(server.dicomweb + f"/studies/{instances[0][0]}", headers={**AUTH, "Accept": ANY})
        assert [b for _, b in split_multipart(r.content, r.headers["Content-Type"])] == [d for *_, d in instances]
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_server).list_objects_v2(Bucket=bucket)["Contents"]]
        assert len(keys) == 3 and all(k.startswith("archive/") for k in keys)   # before the multi-frame one
        framed = ct_instance(instances[0][0], instances[0][1], rows=16, columns=16, frames=5)
        client.store_instances([read(framed)])
        sop = str(read(framed).SOPInstanceUID)
        assert client.retrieve_instance_frames(instances[0][0], instances[0][1], sop, frame_numbers=[4]) == [
            read(framed).pixel_array[3].tobytes()]   # a ranged GET on S3
        [study] = client.search_for_studies(search_filters={"StudyInstanceUID": instances[0][0]})
        assert study["00201208"]["Value"] == [4]
        assert len(client.search_for_instances(instances[0][0], instances[0][1])) == 4
    finally:
        server.stop()


def test_dicomweb_client_search(server):
    client = client_for(server)
    study_uid, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    patient = f"Searchable^Person{time.time_ns() % 100000}"
    datasets = [read(ct_instance(study_uid, series, number=n, rows=8, columns=8, patient_name=patient,
                                 patient_id="SEARCH-1", series_number=s, Modality=modality))
                for s, (series, modality) in enumerate([(series_a, "CT"), (series_b, "PT")], 1) for n in (1, 2, 3)]
    client.store_instances(datasets)

    [study] = client.search_for_studies(search_filters={"PatientName": patient.split("^")[0] + "*"})
    assert study["0020000D"]["Value"] == [study_uid]
    assert study["00201208"]["Value"] == [6] and study["00080061"]["Value"] == ["CT", "PT"]
    fuzzy = client.search_for_studies(search_filters={"PatientName": patient.split("^")[1].lower()},
                                      fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [study_uid]
    described = client.search_for_studies(search_filters={"PatientID": "SEARCH-1"}, fields=["StudyDescription"])
    assert described[0]["00081030"]["Value"] == ["CT THORAX"]

    series = client.search_for_series(study_uid)
    assert [s["0020000E"]["Value"][0] for s in series] == [series_a, series_b]
    assert client.search_for_series(search_filters={"Modality": "PT", "PatientID": "SEARCH-1"})[0][
        "0020000E"]["Value"] == [series_b]

    first = client.search_for_instances(study_uid, limit=4)
    rest = client.search_for_instances(study_uid, limit=4, offset=4)
    assert len(first) == 4 and len(rest) == 2
    everything = {i["00080018"]["Value"][0] for i in first + rest}
    assert everything == {str(ds.SOPInstanceUID) for ds in datasets}
    in_series = client.search_for_instances(study_uid, series_b)
    assert {i["0020000E"]["Value"][0] for i in in_series} == {series_b}
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY-AT-ALL"}) == []


def test_dicomweb_client_metadata(server):
    client = client_for(server)
    instances = list(synthetic_study(StudySpec(series=2, instances_per_series=3, rows=16, columns=16)))
    datasets = [read(data) for *_, data in instances]
    client.store_instances(datasets)
    study_uid, series_uid, sop_uid = instances[0][0], instances[0][1], instances[0][2]
    study = client.retrieve_study_metadata(study_uid)
    assert sorted(m["00080018"]["Value"][0] for m in study) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert len(client.retrieve_series_metadata(study_uid, series_uid)) == 3
    [model] = [client.retrieve_instance_metadata(study_uid, series_uid, sop_uid)]
    rebuilt = pydicom.Dataset.from_json(model, bulk_data_uri_handler=lambda tag, vr, uri: b"")
    original = datasets[0]
    assert rebuilt.PatientName == original.PatientName and rebuilt.Rows == original.Rows
    assert model["7FE00010"]["BulkDataURI"] == (f"{server.dicomweb}/studies/{study_uid}/series/{series_uid}/"
                                                f"instances/{sop_uid}/bulk/7FE00010")
    assert client.retrieve_bulkdata(model["7FE00010"]["BulkDataURI"]) == [original.PixelData]
    r = requests.get(f"{server.dicomweb}/studies/{study_uid}/metadata", headers={**AUTH, "Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip" and len(r.json()) == 6


def test_dicomweb_client_follows_the_urls_it_is_given_without_a_public_url(tmp_path):
    """No DICOMWEB_PUBLIC_URL and dicomweb-client's Host without the port: the BulkDataURI and
    RetrieveURL it is handed name the port it connected to, and following them works."""
    port = free_port()
    server = Server({"DICOMWEB_DATA_DIR": str(tmp_path), "DICOMWEB_API_KEY": API_KEY}, port, tmp_path / "gunicorn.log")
    try:
        client = client_for(server)
        study_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
        original = read(ct_instance(study_uid, series_uid, sop_uid, rows=16, columns=16))
        stored = client.store_instances([original])
        assert stored.RetrieveURL == f"http://127.0.0.1:{port}/dicom-web/studies/{study_uid}"
        model = client.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
        assert model["7FE00010"]["BulkDataURI"].startswith(f"http://127.0.0.1:{port}/dicom-web/studies/")
        assert client.retrieve_bulkdata(model["7FE00010"]["BulkDataURI"]) == [original.PixelData]
    finally:
        server.stop()


def test_dicomweb_client_frames(server):
    client = client_for(server)
    study_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
    data = ct_instance(study_uid, series_uid, sop_uid, rows=32, columns=32, frames=10)
    client.store_instances([read(data)])
    frames = client.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[2, 10])
    pixels = read(data).pixel_array
    assert frames == [pixels[1].tobytes(), pixels[9].tobytes()]


def test_dicomweb_client_compressed_frames(server):
    client = client_for(server)
    original = read((TEST_FILES / "SC_rgb_rle_2frame.dcm").read_bytes())
    # pydicom's RLE and JPEG examples share one SOP Instance UID: give this one its own.
    original.SOPInstanceUID = original.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    original.save_as(buffer, enforce_file_format=True)
    r = requests.post(server.dicomweb + "/studies", data=buffer.getvalue(),
                      headers={**AUTH, "Content-Type": "application/dicom"})
    assert r.status_code == 200
    frames = client.retrieve_instance_frames(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID, frame_numbers=[2, 1],
        media_types=(("image/dicom-rle", "1.2.840.10008.1.2.5"),))
    import pydicom.encaps

    expected = list(pydicom.encaps.generate_frames(original.PixelData, number_of_frames=2))
    assert frames == [expected[1], expected[0]]


def test_stow_of_json_metadata_and_a_jpeg_through_gunicorn(server):
    import orjson

    from tests.test_stow_metadata import body, photo, sc_model

    study = generate_uid()
    pixels, jpeg = photo()
    model = sc_model(study, **{"7FE00010": {"vr": "OB", "BulkDataURI": "camera/1.jpg"}})
    r = requests.post(server.dicomweb + "/studies", headers={
        **AUTH, "Content-Type": 'multipart/related; type="application/dicom+json"; boundary=meta-b'},
        data=body([({"Content-Type": "application/dicom+json"}, orjson.dumps([model])),
                   ({"Content-Type": "image/jpeg", "Content-Location": "camera/1.jpg"}, jpeg)]))
    assert r.status_code == 200, r.text
    [stored] = client_for(server).retrieve_study(study)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"   # decoded for the default Accept
    assert np.abs(stored.pixel_array.astype(int) - pixels.astype(int)).mean() < 4


def test_dicomweb_client_deletes_each_level_through_gunicorn(server):
    client = client_for(server)
    instances = list(synthetic_study(StudySpec(series=2, instances_per_series=2, rows=16, columns=16)))
    client.store_instances([read(data) for *_, data in instances])
    study, series, sop, _ = instances[0]
    client.delete_instance(study, series, sop)
    assert requests.get(f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}", headers=AUTH).status_code == 404
    [row] = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert row["00201208"]["Value"] == [3]
    client.delete_series(study, instances[2][1])
    [row] = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert row["00201208"]["Value"] == [1] and row["00201206"]["Value"] == [1]
    client.delete_study(study)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert requests.delete(f"{server.dicomweb}/studies/{study}", headers=AUTH).status_code == 404
    assert requests.delete(f"{server.dicomweb}/studies/{study}").status_code == 401


def test_retrieve_capabilities_through_gunicorn(server):
    import xml.etree.ElementTree as ET

    r = requests.options(server.dicomweb + "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/vnd.sun.wadl+xml")
    base = ET.fromstring(r.content).find("{http://wadl.dev.java.net/2009/02}resources").get("base")
    assert base == server.dicomweb + "/"   # the public URL, as every URL handed out
    r = requests.options(server.dicomweb + "/studies/1.2.3/series/4.5/instances/6.7/frames/1")
    assert r.status_code == 200 and r.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_reject_purge_and_storage_commitment_through_gunicorn(server, tmp_path):
    import os
    import subprocess
    import sys

    import orjson

    client = client_for(server)
    instances = list(synthetic_study(StudySpec(series=2, instances_per_series=2, rows=16, columns=16)))
    client.store_instances([read(data) for *_, data in instances])
    study, series, sop, _ = instances[0]
    body = orjson.dumps({"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}, "00081155": {"vr": "UI", "Value": [uid]}}
        for uid in (sop, generate_uid())]}})
    transaction = generate_uid()
    r = requests.post(f"{server.dicomweb}/commitment-requests/{transaction}", data=body,
                      headers={**AUTH, "Content-Type": "application/dicom+json"})
    assert r.status_code == 200
    assert [i["00081155"]["Value"][0] for i in r.json()["00081199"]["Value"]] == [sop]
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0112]
    assert requests.get(f"{server.dicomweb}/commitment-requests/{transaction}", headers=AUTH).json() == r.json()

    r = requests.post(f"{server.dicomweb}/studies/{study}/series/{series}/reject/113001%5EDCM", headers=AUTH)
    assert r.status_code == 200 and r.json()["rejected"] == 2
    assert requests.get(f"{server.dicomweb}/studies/{study}/series/{series}", headers=AUTH).status_code == 404
    assert requests.get(r.json()["rejectionNote"], headers={**AUTH, "Accept": "application/dicom"}).status_code == 200
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")},
           "DICOMWEB_DATA_DIR": server.log_path.parent.as_posix()}
    from testbed.server import ROOT

    purged = subprocess.run([sys.executable, "-m", "service.cli", "purge", "--rejected-before", "2999-01-01"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert "purged 2 rejected instance(s)" in purged.stdout, purged.stdout + purged.stderr


def test_dicomweb_client_with_htj2k_jpeg_xl_reports_and_video_through_gunicorn(server, tmp_path):
    """Issue 19 from a real client: HTJ2K and JPEG XL frames and instances asked for by
    dicomweb-client, a report rendered as HTML, a video sent by byte ranges and framed, a cine
    made into an MP4, all through gunicorn."""
    import shutil

    from testbed.synthetic import measurement_report, video_instance

    client = client_for(server)
    study_uid, series_uid = generate_uid(), generate_uid()
    data = ct_instance(study_uid, series_uid, rows=128, columns=128, frames=3, pixels=np.stack([phantom(128, 128)] * 3))
    ds = read(data)
    client.store_instances([ds])
    from transcode.codecs import PixelDescription, decode_frame

    instance_url = f"{server.dicomweb}/studies/{study_uid}/series/{series_uid}/instances/{ds.SOPInstanceUID}"
    for media_type, syntax in (("image/jphc", "1.2.840.10008.1.2.4.201"), ("image/jphc", "1.2.840.10008.1.2.4.202"),
                               ("image/jxl", "1.2.840.10008.1.2.4.110")):
        # dicomweb-client knows neither these media types nor their syntaxes: raw HTTP
        r = requests.get(instance_url + "/frames/3", timeout=60, headers={
            **AUTH, "Accept": f"multipart/related; type={media_type}; transfer-syntax={syntax}"})
        [(headers, frame)] = split_multipart(r.content, r.headers["Content-Type"])
        assert headers["content-type"] == f"{media_type}; transfer-syntax={syntax}"
        native, _ = decode_frame(frame, PixelDescription.from_dataset(ds), syntax)
        assert native == ds.pixel_array[2].astype("<u2").tobytes()
        r = requests.get(instance_url, timeout=60, headers={
            **AUTH, "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'})
        instance = read(split_multipart(r.content, r.headers["Content-Type"])[0][1])
        assert instance.file_meta.TransferSyntaxUID == syntax   # nor these syntaxes: by raw HTTP too
    report = read(measurement_report(study_uid, [(series_uid, ds.SOPInstanceUID)], measurements=10))
    client.store_instances([report])
    page = client.retrieve_instance_rendered(study_uid, report.SeriesInstanceUID, report.SOPInstanceUID,
                                             media_types=("text/html",))
    assert b"Imaging Measurement Report" in page and f'href="{server.dicomweb}/studies/'.encode() in page
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (make test installs it)")
    video = read(video_instance(generate_uid(), generate_uid(), "h264-mp4", seconds=1.0))
    client.store_instances([video])
    url = f"{server.dicomweb}/studies/{video.StudyInstanceUID}/series/{video.SeriesInstanceUID}" \
          f"/instances/{video.SOPInstanceUID}"
    stream = list(pydicom.encaps.generate_fragments(video.PixelData))[1]
    part = requests.get(url + "/rendered", headers={**AUTH, "Range": "bytes=1000-1999"}, timeout=60)
    assert part.status_code == 206 and part.content == stream[1000:2000]
    thumbnail = requests.get(url + "/thumbnail", headers=AUTH, timeout=60)
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    mp4 = requests.get(instance_url + "/rendered", headers={**AUTH, "Accept": "video/mp4"}, timeout=60)
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
