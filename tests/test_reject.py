"""Reject (IHE IOCM): a Rejection Note stored, the instances it names hidden from every resource
with their blobs kept (the sweep leaves them) until purged; the same from a note received by STOW."""
import io
import time

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from service.cli import main
from service.store.rejection import KEY_OBJECT_SELECTION, UnknownRejectionCode, parse_code, rejected_by, rejection_note
from testbed.messages import multipart_body, stow_headers
from testbed.synthetic import ct_instance
from tests.conftest import API_KEY
from tests.test_delete import DELETER_KEY, deleting_config, study_row

CODE = "113001^DCM"


@pytest.fixture
def config(tmp_path, catalog_url):
    return deleting_config(tmp_path, catalog_url=catalog_url)


@pytest.fixture
def study(client):
    uid, first, second = generate_uid(), generate_uid(), generate_uid()
    parts = [ct_instance(uid, first, number=n, rows=8, columns=8, series_number=1) for n in (1, 2)]
    parts.append(ct_instance(uid, second, rows=8, columns=8, series_number=2, Modality="MR"))
    assert client.post("/dicom-web/studies", data=multipart_body(parts), headers=stow_headers()).status_code == 200
    return uid, first, second


def reject(client, path, key=DELETER_KEY):
    return client.post(f"/dicom-web{path}/reject/{CODE}", headers={"Authorization": key})


def test_a_rejected_series_is_hidden_and_its_note_stored(client, app, study):
    uid, first, second = study
    r = reject(client, f"/studies/{uid}/series/{first}")
    assert r.status_code == 200 and r.get_json()["rejected"] == 2
    note_url = r.headers["Content-Location"]
    assert client.get(f"/dicom-web/studies/{uid}/series/{first}").status_code == 404
    series = {s["0020000E"]["Value"][0]: s for s in client.get(f"/dicom-web/studies/{uid}/series").get_json()}
    assert first not in series and second in series
    [note_series] = [s for s in series if s != second]
    assert series[note_series]["00080060"]["Value"] == ["KO"]
    row = study_row(client, uid)
    assert row["00201208"]["Value"] == [2] and sorted(row["00080061"]["Value"]) == ["KO", "MR"]
    # The note names what it rejects, under the code asked for.
    note = pydicom.dcmread(io.BytesIO(client.get(note_url.replace("http://localhost", ""),
                                                 headers={"Accept": "application/dicom"}).data))
    code, referenced = rejected_by(note)
    assert code == ("113001", "DCM") and {s for _, s, _ in referenced} == {first} and len(referenced) == 2
    assert note.PatientName == "Doe^Jane" and note.StudyInstanceUID == uid
    # Kept until purged: the sweep leaves the blobs.
    archive = app.extensions["archive"]
    rejected = archive.catalog.rejected(uid)
    assert len(rejected) == 2 and all(archive._blobs.exists(r.blob_key) for r in rejected)
    archive.sweep(grace_seconds=0)
    assert all(archive._blobs.exists(r.blob_key) for r in rejected)


def test_a_study_rejected_twice_keeps_its_first_note(client, study):
    uid, first, second = study
    assert reject(client, f"/studies/{uid}/series/{first}").get_json()["rejected"] == 2
    assert reject(client, f"/studies/{uid}").get_json()["rejected"] == 1   # the MR instance, not the note
    series = client.get(f"/dicom-web/studies/{uid}/series").get_json()   # two notes, a series each
    assert [(s["00080060"]["Value"], s["00201209"]["Value"]) for s in series] == [(["KO"], [1]), (["KO"], [1])]


def test_purge_removes_what_was_rejected_before_the_date(client, app, study, tmp_path, monkeypatch):
    uid, first, _ = study
    reject(client, f"/studies/{uid}/series/{first}")
    archive = app.extensions["archive"]
    keys = [r.blob_key for r in archive.catalog.rejected(uid)]
    assert archive.purge_rejected(time.time() - 3600) == 0
    config = app.config["DICOMWEB"]
    for name in [n for n in __import__("os").environ if n.startswith("DICOMWEB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DICOMWEB_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("DICOMWEB_CATALOG_URL", config.catalog_url)
    assert CliRunner().invoke(main, ["purge", "--rejected-before", "not-a-date"]).exit_code != 0
    result = CliRunner().invoke(main, ["purge", "--rejected-before", "2999-01-01"], catch_exceptions=False)
    assert "purged 2 rejected instance(s)" in result.output
    assert archive.catalog.rejected(uid) == [] and not any(archive._blobs.exists(k) for k in keys)


def test_a_rejection_note_received_by_stow_rejects_what_it_names(client, study):
    uid, first, second = study
    [instance] = client.get(f"/dicom-web/studies/{uid}/series/{second}/instances").get_json()
    sop, sop_class = instance["00080018"]["Value"][0], instance["00080016"]["Value"][0]
    header = pydicom.dcmread(io.BytesIO(ct_instance(uid, second, rows=8, columns=8)), stop_before_pixels=True)
    _, _, note = rejection_note(header, [(second, sop, sop_class)], parse_code("113039^DCM"))
    without = client.post("/dicom-web/studies", data=multipart_body([note]),
                          headers={**stow_headers(), "Authorization": API_KEY})   # read,store only
    assert without.status_code == 200 and "rejected nothing" in without.headers["Warning"]
    assert client.get(f"/dicom-web/studies/{uid}/series/{second}").status_code == 200
    _, _, note = rejection_note(header, [(second, sop, sop_class)], parse_code("113039^DCM"))
    r = client.post("/dicom-web/studies", data=multipart_body([note]),
                    headers={**stow_headers(), "Authorization": DELETER_KEY})
    assert r.status_code == 200 and "Warning" not in r.headers
    assert client.get(f"/dicom-web/studies/{uid}/series/{second}").status_code == 404


def test_bad_codes_unknown_resources_and_permissions(client, study):
    uid, first, _ = study
    r = client.post(f"/dicom-web/studies/{uid}/reject/999999^XYZ", headers={"Authorization": DELETER_KEY})
    assert r.status_code == 400 and "113001^DCM" in r.get_json()["message"]
    assert reject(client, f"/studies/{generate_uid()}").status_code == 404
    assert reject(client, "/studies/1..2").status_code == 400
    r = reject(client, f"/studies/{uid}", key=API_KEY)
    assert r.status_code == 403 and "delete" in r.get_json()["message"]


def test_an_ordinary_key_object_selection_is_no_rejection():
    note = pydicom.Dataset()
    note.SOPClassUID = KEY_OBJECT_SELECTION
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113000", "DCM"   # Of Interest
    note.ConceptNameCodeSequence = [code]
    assert rejected_by(note) is None
    with pytest.raises(UnknownRejectionCode, match="113037"):
        parse_code("113000^DCM")
