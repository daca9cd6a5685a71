"""WADO-RS metadata: the stored DICOM JSON against pydicom's reading of the originals."""
import gzip
import io
import json
import warnings
import xml.etree.ElementTree as ET

import pydicom
import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service.wire.dicom_xml import NAMESPACE
from tests.conftest import TEST_FILES
from testbed.messages import read, multipart_body, split_multipart, stow_headers

CHARSET_FILES = TEST_FILES.parent / "charset_files"




def store(client, *datas):
    r = client.post("/dicom-web/studies", data=multipart_body(list(datas)), headers=stow_headers())
    assert r.status_code == 200, r.data


def assert_same_attributes(model: dict, original: pydicom.Dataset, url_prefix: str):
    """Every attribute of the original (up to Pixel Data) is in the model with an equal value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = pydicom.Dataset.from_json(model, bulk_data_uri_handler=lambda tag, vr, uri: b"")
    for elem in original:
        if elem.tag >= 0x7FE00000:
            continue
        key = f"{elem.tag:08X}"
        assert key in model, elem
        if "BulkDataURI" in model[key]:
            assert model[key]["BulkDataURI"].startswith(url_prefix)
            continue
        if elem.VR == "SQ":
            assert len(rebuilt[elem.tag].value) == len(elem.value)
            continue
        assert rebuilt[elem.tag].value == elem.value, elem


def test_study_series_instance_metadata(client):
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    datas = [ct_instance(study, s1, number=1, rows=8, columns=8), ct_instance(study, s1, number=2, rows=8, columns=8),
             ct_instance(study, s2, number=1, rows=8, columns=8, series_number=2)]
    store(client, *datas)
    r = client.get(f"/dicom-web/studies/{study}/metadata")
    assert r.status_code == 200 and r.mimetype == "application/dicom+json"
    models = r.get_json()
    assert len(models) == 3
    for model, data in zip(models, datas):
        original = read(data)
        assert_same_attributes(model, original, "http://localhost/dicom-web/studies/")
        assert model["7FE00010"] == {"vr": "OW", "BulkDataURI": (
            f"http://localhost/dicom-web/studies/{study}/series/{original.SeriesInstanceUID}/instances/"
            f"{original.SOPInstanceUID}/bulk/7FE00010")}
    assert len(client.get(f"/dicom-web/studies/{study}/series/{s1}/metadata").get_json()) == 2
    sop = read(datas[2]).SOPInstanceUID
    [one] = client.get(f"/dicom-web/studies/{study}/series/{s2}/instances/{sop}/metadata").get_json()
    assert one["00080018"]["Value"] == [sop]


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrI2.dcm", "chrX1.dcm", "chrRuss.dcm", "chrArab.dcm", "chrGreek.dcm"])
def test_character_sets_come_back_right(client, name):
    original = read((CHARSET_FILES / name).read_bytes())
    original.StudyInstanceUID, original.SeriesInstanceUID = generate_uid(), generate_uid()
    original.SOPInstanceUID = original.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    original.save_as(buffer, enforce_file_format=True)
    store(client, buffer.getvalue())
    [model] = client.get(f"/dicom-web/studies/{original.StudyInstanceUID}/metadata").get_json()
    assert_same_attributes(model, read(buffer.getvalue()), "http://localhost/")
    groups = str(original.PatientName).split("=")
    assert [model["00100010"]["Value"][0].get(g) for g in ("Alphabetic", "Ideographic", "Phonetic")][:len(groups)] \
        == [g or None for g in groups]


def test_pydicom_files_with_sequences_private_tags_and_binary(client):
    for name in ["rtplan.dcm", "nested_priv_SQ.dcm", "waveform_ecg.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
                 "reportsi.dcm", "badVR.dcm"]:
        data = (TEST_FILES / name).read_bytes()
        original = read(data)
        if "SOPInstanceUID" not in original:
            continue
        r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
        if r.status_code != 200:
            continue  # e.g. a UID clash with an earlier file
        url = (f"/dicom-web/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}/instances/"
               f"{original.SOPInstanceUID}/metadata")
        [model] = client.get(url).get_json()
        if name != "badVR.dcm":
            assert_same_attributes(model, original, "http://localhost/dicom-web/studies/")
        if "PixelData" in original:
            assert model["7FE00010"]["vr"] == original["PixelData"].VR.split(" ")[0] or \
                model["7FE00010"]["vr"] in ("OB", "OW")


def test_etag_gzip_and_xml(client):
    study = generate_uid()
    store(client, ct_instance(study, generate_uid(), rows=8, columns=8))
    url = f"/dicom-web/studies/{study}/metadata"
    first = client.get(url)
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.get(url, headers={"If-None-Match": "W/" + first.headers["ETag"]}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    zipped = client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] != first.headers["ETag"]
    assert json.loads(gzip.decompress(zipped.data)) == first.get_json()
    store(client, ct_instance(study, generate_uid(), rows=8, columns=8))
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 200  # study changed
    xml = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    parts = split_multipart(xml.data, xml.headers["Content-Type"])
    assert len(parts) == 2
    root = ET.fromstring(parts[0][1])
    bulk = root.find(f"{{{NAMESPACE}}}DicomAttribute[@tag='7FE00010']/{{{NAMESPACE}}}BulkData")
    assert bulk.get("uri").endswith("/bulk/7FE00010")


def test_errors(client):
    assert client.get(f"/dicom-web/studies/{generate_uid()}/metadata").status_code == 404
    assert client.get("/dicom-web/studies/1.x/metadata").status_code == 400
    study = generate_uid()
    store(client, ct_instance(study, generate_uid(), rows=8, columns=8))
    assert client.get(f"/dicom-web/studies/{study}/metadata", headers={"Accept": "application/dicom"}).status_code == 406


def test_instances_stored_before_metadata_was_kept_are_backfilled(app, client):
    study = generate_uid()
    store(client, ct_instance(study, generate_uid(), rows=8, columns=8), ct_instance(study, generate_uid(), rows=8, columns=8))
    before = client.get(f"/dicom-web/studies/{study}/metadata").get_json()
    assert _sql(app, "DELETE FROM instance_metadata") is None   # as a catalog of a release before it was kept
    assert client.get(f"/dicom-web/studies/{study}/metadata").get_json() == before
    assert _sql(app, "SELECT count(*) FROM instance_metadata") == 2


def test_frames_of_an_instance_stored_before_metadata_was_kept(app, client):
    """The one-read path of a frames request makes the missing details, as the others do."""
    study, series = generate_uid(), generate_uid()
    data = ct_instance(study, series, rows=8, columns=8)
    store(client, data)
    sop = read(data).SOPInstanceUID
    url = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    before = client.get(url, headers=accept)
    _sql(app, "DELETE FROM instance_metadata")
    after = client.get(url, headers=accept)
    assert after.status_code == before.status_code == 200
    assert split_multipart(after.data, after.headers["Content-Type"]) == split_multipart(before.data, before.headers["Content-Type"])
    assert _sql(app, "SELECT count(*) FROM instance_metadata") == 1


def test_backfill_command(app, client):
    study = generate_uid()
    store(client, *[ct_instance(study, generate_uid(), rows=8, columns=8) for _ in range(3)])
    before = client.get(f"/dicom-web/studies/{study}/metadata").get_json()
    _sql(app, "DELETE FROM instance_metadata")
    result = _dicomweb(app, "backfill")
    assert "made the metadata of 3 instance(s)" in result.output
    assert _dicomweb(app, "backfill").output.startswith("made the metadata of 0")
    assert client.get(f"/dicom-web/studies/{study}/metadata").get_json() == before


def _sql(app, statement: str):
    """A statement run on the app's catalog database from outside, as an operator's tool would;
    the first value of its answer, if any."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(app.config["DICOMWEB"].catalog_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(statement)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def _dicomweb(app, *args):
    """The operator's command, on the app's own archive."""
    from click.testing import CliRunner

    from service.cli import main

    config = app.config["DICOMWEB"]
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env={
        "DICOMWEB_DATA_DIR": str(config.data_dir), "DICOMWEB_CATALOG_URL": config.catalog_url,
        "DICOMWEB_STORAGE": config.storage, "DICOMWEB_FSYNC": "off"})


def _models(path, make):
    """``make``'s JSON model of the file's data set up to Pixel Data, or the error it raised."""
    from storage.metadata import BULK_DATA_THRESHOLD

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return None
        uri = (lambda elem: f"uri/{elem.tag:08X}")
        try:
            return make(ds, uri, BULK_DATA_THRESHOLD)
        except Exception as exc:
            return type(exc)


def test_the_json_model_is_pydicoms_over_its_test_files():
    """storage.metadata makes the model of plain-valued elements itself (for speed): over every
    file pydicom ships (every character set, damaged values, nested sequences), what it makes,
    or the error it raises, is what pydicom's to_json_dict gives."""
    from storage.metadata import _dataset_json
    from tests.conftest import pydicom_test_files

    compared = 0
    for path in pydicom_test_files():
        ours = _models(path, lambda ds, uri, threshold: _dataset_json(ds, uri))
        theirs = _models(path, lambda ds, uri, threshold: ds.to_json_dict(threshold, uri))
        assert ours == theirs, path.name
        compared += isinstance(theirs, dict)
    assert compared > 100
