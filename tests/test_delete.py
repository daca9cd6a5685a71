"""DELETE of studies, series and instances: gone from every resource at once, counts right, blobs
removed after the catalog commits, never a blob a new store wrote; on SQLite and PostgreSQL,
disk and S3 (moto over HTTP)."""
import json
import logging
import time

import boto3
import pytest
from pydicom.uid import generate_uid

from service import create_app
from service.config import DEFAULT_PERMISSIONS, Peer, hash_key
from storage import Archive, Catalog, open_blob_store
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, PEER, make_config

DELETER_KEY = "deleter-key-0123456789"


def deleting_config(tmp_path, **overrides):
    peers = (Peer(PEER, hash_key(API_KEY)), Peer("records-office", hash_key(DELETER_KEY), DEFAULT_PERMISSIONS | {"delete"}))
    return make_config(tmp_path, peers=peers, **overrides)


@pytest.fixture(params=["disk", "s3"])
def storage(request, tmp_path):
    if request.param == "disk":
        return {}
    request.getfixturevalue("aws_env")
    endpoint = request.getfixturevalue("moto_server")
    bucket = f"delete{time.time_ns()}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return {"storage": f"s3://{bucket}/archive", "s3_endpoint_url": endpoint}


@pytest.fixture
def config(tmp_path, catalog_url, storage):
    return deleting_config(tmp_path, catalog_url=catalog_url, **storage)


@pytest.fixture
def study(client):
    """One study: a CT series of two and an MR series of two; and another study beside it."""
    uid, ct, mr = generate_uid(), generate_uid(), generate_uid()
    parts = [ct_instance(uid, ct, number=n, rows=8, columns=8, series_number=1) for n in (1, 2)]
    parts += [ct_instance(uid, mr, number=n, rows=8, columns=8, series_number=2, Modality="MR") for n in (1, 2)]
    other = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)
    assert client.post("/dicom-web/studies", data=multipart_body(parts + [other]), headers=stow_headers()).status_code == 200
    sops = client.get(f"/dicom-web/studies/{uid}/instances").get_json()
    return {"study": uid, "ct": ct, "mr": mr, "parts": parts,
            "sops": {(i["0020000E"]["Value"][0], i["00080018"]["Value"][0]) for i in sops}}


def delete(client, path, key=DELETER_KEY):
    return client.delete("/dicom-web" + path, headers={"Authorization": key})


def blob_keys(app) -> list[str]:
    archive: Archive = app.extensions["archive"]
    return sorted(key for key, _ in archive._blobs.list())


def study_row(client, uid):
    found = client.get(f"/dicom-web/studies?StudyInstanceUID={uid}&includefield=ModalitiesInStudy").get_json()
    return found[0] if found else None


def test_each_level_disappears_at_once_and_counts_follow(client, app, study):
    uid, ct, mr = study["study"], study["ct"], study["mr"]
    blobs_before = len(blob_keys(app))
    one_ct = sorted(sop for series, sop in study["sops"] if series == ct)[0]

    assert delete(client, f"/studies/{uid}/series/{ct}/instances/{one_ct}").status_code == 204
    assert client.get(f"/dicom-web/studies/{uid}/series/{ct}/instances/{one_ct}").status_code == 404
    row = study_row(client, uid)
    assert row["00201208"]["Value"] == [3] and row["00201206"]["Value"] == [2]
    assert len(blob_keys(app)) == blobs_before - 1

    assert delete(client, f"/studies/{uid}/series/{mr}").status_code == 204
    row = study_row(client, uid)
    assert row["00201208"]["Value"] == [1] and row["00201206"]["Value"] == [1]
    assert row["00080061"]["Value"] == ["CT"]
    assert client.get(f"/dicom-web/studies/{uid}/series/{mr}/metadata").status_code == 404

    assert delete(client, f"/studies/{uid}").status_code == 204
    assert study_row(client, uid) is None
    for path in (f"/dicom-web/studies/{uid}", f"/dicom-web/studies/{uid}/metadata", f"/dicom-web/studies/{uid}/rendered",
                 f"/dicom-web/studies/{uid}/thumbnail", f"/fhir/ImagingStudy/{uid}",
                 f"/dicom-web/wado?requestType=WADO&studyUID={uid}&seriesUID={ct}&objectUID={one_ct}"):
        assert client.get(path).status_code == 404, path
    assert client.get(f"/dicom-web/studies/{uid}/series").get_json() == []
    assert client.get(f"/fhir/ImagingStudy?identifier=urn:oid:{uid}").get_json()["total"] == 0
    assert len(blob_keys(app)) == blobs_before - 4   # the other study's blob stays
    assert app.extensions["archive"].catalog.doomed() == []


def test_a_deleted_instance_can_be_stored_again(client, app, study):
    uid = study["study"]
    assert delete(client, f"/studies/{uid}").status_code == 204
    r = client.post("/dicom-web/studies", data=multipart_body(study["parts"]), headers=stow_headers())
    assert r.status_code == 200
    assert study_row(client, uid)["00201208"]["Value"] == [4]
    for series, sop in study["sops"]:
        assert client.get(f"/dicom-web/studies/{uid}/series/{series}/instances/{sop}").status_code == 200


def test_unknown_malformed_and_unpermitted_deletes(client, study):
    uid = study["study"]
    assert delete(client, f"/studies/{generate_uid()}").status_code == 404
    assert delete(client, f"/studies/{uid}/series/{generate_uid()}").status_code == 404
    assert delete(client, "/studies/1..2").status_code == 400
    r = delete(client, f"/studies/{uid}", key=API_KEY)   # read,store only
    assert r.status_code == 403 and "delete" in r.get_json()["message"]
    assert study_row(client, uid) is not None


def test_the_audit_names_the_peer_the_resource_and_the_count(client, study, caplog):
    with caplog.at_level(logging.INFO, logger="dicomweb.audit"):
        client.delete(f"/dicom-web/studies/{study['study']}/series/{study['mr']}",
                      headers={"Authorization": DELETER_KEY}, buffered=True)
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dicomweb.audit"]
    assert record["peer"] == "records-office" and record["method"] == "DELETE" and record["status"] == 204
    assert record["deleted"] == 2 and record["study"] == study["study"]
    assert record["path"].endswith(study["mr"])


# -- blobs after the commit: never one a new store wrote -----------------------------------

@pytest.fixture
def disk_archive(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.create_schema()
    return Archive(open_blob_store(str(tmp_path / "blobs"), fsync=False), catalog)


def _store(archive, data):
    import io

    batch = archive.batch()
    batch.add(io.BytesIO(data))
    [outcome] = batch.commit()
    assert outcome.failure is None
    return archive.instances(*_uids(data))[0]


def _uids(data):
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_an_instance_stored_again_before_its_old_blob_is_removed_gets_a_blob_of_its_own(disk_archive, monkeypatch):
    data = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)
    first = _store(disk_archive, data)
    monkeypatch.setattr(disk_archive, "remove_doomed", lambda *a, **k: 0)   # the removal has not run yet
    assert disk_archive.delete(*_uids(data)) == 1
    assert disk_archive.catalog.doomed() == [first.blob_key]
    again = _store(disk_archive, data)   # identical bytes: the same key, were it not doomed
    assert again.blob_key != first.blob_key
    monkeypatch.undo()
    assert disk_archive.remove_doomed() == 1
    assert disk_archive.read(again) == data and not disk_archive._blobs.exists(first.blob_key)


def test_removal_waits_for_a_store_in_progress_in_that_directory(disk_archive, monkeypatch):
    data = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)
    first = _store(disk_archive, data)
    monkeypatch.setattr(disk_archive, "remove_doomed", lambda *a, **k: 0)
    disk_archive.delete(*_uids(data))
    monkeypatch.undo()
    disk_archive.catalog.mark_pending(first.blob_key.rsplit("/", 1)[0], "a-store")
    assert disk_archive.remove_doomed() == 0 and disk_archive._blobs.exists(first.blob_key)
    disk_archive.catalog.forget_pending("a-store")
    assert disk_archive.remove_doomed() == 1 and not disk_archive._blobs.exists(first.blob_key)


def test_a_blob_that_cannot_be_removed_stays_doomed_until_the_sweep(disk_archive, monkeypatch):
    data = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)
    first = _store(disk_archive, data)
    real_delete = disk_archive._blobs.delete
    monkeypatch.setattr(disk_archive._blobs, "delete", lambda key: (_ for _ in ()).throw(OSError("disk away")))
    assert disk_archive.delete(*_uids(data)) == 1   # deleted all the same: the catalog is the commit point
    assert disk_archive.instances(*_uids(data)) == [] and disk_archive.catalog.doomed() == [first.blob_key]
    monkeypatch.setattr(disk_archive._blobs, "delete", real_delete)
    assert disk_archive.sweep() >= 1
    assert disk_archive.catalog.doomed() == [] and not disk_archive._blobs.exists(first.blob_key)


def test_a_delete_app_over_the_default_configuration_refuses_without_the_permission(tmp_path):
    client = create_app(make_config(tmp_path)).test_client()
    r = client.delete(f"/dicom-web/studies/{generate_uid()}", headers={"Authorization": API_KEY})
    assert r.status_code == 403


def test_stores_and_deletes_of_one_study_at_once_leave_a_consistent_archive(client, app, config):
    """Stores into a study while it is deleted again and again: each instance ends whole (row, blob,
    counts) or gone whole; no row without its blob, no blob left behind once removal has run."""
    import threading

    uid = generate_uid()
    series = generate_uid()
    stop = threading.Event()
    errors = []

    def store():
        api = app.test_client()
        n = 0
        while not stop.is_set():
            n += 1
            part = ct_instance(uid, series, number=n, rows=8, columns=8)
            r = api.post("/dicom-web/studies", data=multipart_body([part]), headers={**stow_headers(), "Authorization": API_KEY})
            if r.status_code not in (200, 409):
                errors.append(r.status_code)

    def remove():
        api = app.test_client()
        for _ in range(15):
            r = api.delete(f"/dicom-web/studies/{uid}", headers={"Authorization": DELETER_KEY})
            if r.status_code not in (204, 404):
                errors.append(r.status_code)
            time.sleep(0.02)

    storer = threading.Thread(target=store)
    storer.start()
    remove()
    stop.set()
    storer.join()
    assert not errors
    archive = app.extensions["archive"]
    archive.remove_doomed()
    left = archive.instances(uid)
    assert all(archive._blobs.exists(i.blob_key) for i in left)
    row = study_row(client, uid)
    assert (row["00201208"]["Value"][0] if row else 0) == len(left)
    stored_keys = {i.blob_key for i in left}
    assert {k for k in blob_keys(app) if f"/{uid}/" in k} == stored_keys
