"""Anonymisation on retrieve (PS3.15 Annex E, Basic Application Level Confidentiality Profile)."""
import numpy as np
from pydicom.uid import generate_uid

from bench.synthetic import ct_instance
from service.deidentify import deidentify, seed
from tests.conftest import make_config
from tests.helpers import multipart_body, read, split_multipart, stow_headers

# Attributes of PS3.15 table E.1-1 that identify the patient, the people or the places,
# and that must be gone or changed (X, Z, D, U actions) in what is sent.
IDENTIFYING = ["PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
               "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "MilitaryRank",
               "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments", "ReferringPhysicianName",
               "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy", "InstitutionName",
               "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "AccessionNumber", "StudyID",
               "DeviceSerialNumber", "RequestingPhysician", "RequestAttributesSequence"]
UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"]


def identified(**extra):
    data = ct_instance(generate_uid(), generate_uid(), rows=16, columns=16, patient_name="Doe^Jane",
                       patient_id="PAT-12345", InstitutionName="General Hospital", OperatorsName="Smith^Op",
                       OtherPatientIDs="OTHER-1", PatientAddress="1 Main Street", StationName="CT01",
                       DeviceSerialNumber="SN-1", FrameOfReferenceUID=generate_uid(), **extra)
    ds = read(data)
    ds.add_new(0x00090010, "LO", "ACME private")
    ds.add_new(0x00091001, "LO", "Doe Jane secret")
    return ds


def check_deidentified(original, sent):
    for keyword in IDENTIFYING:
        if keyword in original and original[keyword].value not in (None, ""):
            assert keyword not in sent or sent[keyword].value != original[keyword].value, keyword
    for keyword in UIDS:
        if keyword in original:
            assert sent[keyword].value != original[keyword].value, keyword
    assert not [e for e in sent if e.tag.is_private], "private attributes left"
    assert sent.PatientIdentityRemoved == "YES"
    assert sent.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "Basic Application Level Confidentiality Profile" in sent.DeidentificationMethod


def test_the_profile_on_a_data_set():
    original = identified()
    ds = read(_bytes(original))
    deidentify(ds, seed(b"secret", "peer", original.StudyInstanceUID))
    check_deidentified(original, ds)
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def _bytes(ds) -> bytes:
    import io
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_the_removal_table_names_real_attributes():
    from service.deidentify import REMOVED, _REMOVED_TAGS

    assert None not in _REMOVED_TAGS and len(_REMOVED_TAGS) == len(REMOVED)


def test_seeds_are_stable_per_peer_and_study_and_secret():
    assert seed(b"s", "a", "1.2") == seed(b"s", "a", "1.2")
    assert len({seed(b"s", "a", "1.2"), seed(b"s", "b", "1.2"), seed(b"s", "a", "1.3"), seed(b"t", "a", "1.2")}) == 4


def test_wado_rs_study_anonymized_consistently(client):
    study, series = generate_uid(), generate_uid()
    originals = []
    for n in (1, 2):
        ds = identified()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, n
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        originals.append(ds)
    client.post("/dicom-web/studies", data=multipart_body([_bytes(d) for d in originals]), headers=stow_headers())
    r = client.get(f"/dicom-web/studies/{study}?anonymize=true")
    assert r.status_code == 200
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert all("content-location" not in headers for headers, _ in parts)   # no original UIDs
    sent = [read(body) for _, body in parts]
    for original, copy in zip(originals, sent):
        check_deidentified(original, copy)
    assert len({s.StudyInstanceUID for s in sent}) == 1 and len({s.SeriesInstanceUID for s in sent}) == 1
    again = [read(b) for _, b in split_multipart(*(lambda x: (x.data, x.headers["Content-Type"]))(
        client.get(f"/dicom-web/studies/{study}?anonymize=true")))]
    assert [s.SOPInstanceUID for s in again] == [s.SOPInstanceUID for s in sent]   # stable for the same peer
    assert read(client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{originals[0].SOPInstanceUID}",
                           headers={"Accept": "application/dicom"}).data).PatientName == "Doe^Jane"   # stored untouched
    assert client.get(f"/dicom-web/studies/{study}?anonymize=maybe").status_code == 400


def test_another_peer_gets_other_pseudonyms(tmp_path):
    from service import create_app
    from service.auth import Peer, hash_key

    app = create_app(make_config(tmp_path, peers=(Peer("a", hash_key("key-a-0123456789")),
                                                  Peer("b", hash_key("key-b-0123456789")))))
    client = app.test_client()
    ds = identified()
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]),
                headers={**stow_headers(), "Authorization": "ApiKey key-a-0123456789"})
    url = f"/dicom-web/studies/{ds.StudyInstanceUID}?anonymize=true"
    uid_of = lambda key: read(split_multipart(*(lambda r: (r.data, r.headers["Content-Type"]))(  # noqa: E731
        client.get(url, headers={"Authorization": f"ApiKey {key}"})))[0][1]).StudyInstanceUID
    assert uid_of("key-a-0123456789") != uid_of("key-b-0123456789")


def test_wado_uri_anonymize_yes(client):
    ds = identified()
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    r = client.get(f"/dicom-web/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
                   f"&objectUID={ds.SOPInstanceUID}&contentType=application/dicom&anonymize=yes")
    assert r.status_code == 200
    check_deidentified(ds, read(r.data))


def test_metadata_anonymized_like_the_instances(client):
    ds = identified()
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    [model] = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata?anonymize=true").get_json()
    [instance] = [read(b) for _, b in split_multipart(*(lambda r: (r.data, r.headers["Content-Type"]))(
        client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}?anonymize=true")))]
    assert model["0020000D"]["Value"] == [instance.StudyInstanceUID] != [ds.StudyInstanceUID]
    assert model["00080018"]["Value"] == [instance.SOPInstanceUID]
    assert model["00120062"]["Value"] == ["YES"]
    text = str(model)
    for secret in ("Doe^Jane", "PAT-12345", "General Hospital", "Doe Jane secret", ds.SOPInstanceUID):
        assert secret not in text
    assert "7FE00010" not in model   # no BulkDataURI made of original UIDs
    plain = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata").get_json()
    assert plain[0]["00100010"]["Value"][0]["Alphabetic"] == "Doe^Jane"


def test_burned_in_annotations_are_refused(client):
    ds = identified(BurnedInAnnotation="YES")
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                   f"{ds.SOPInstanceUID}?anonymize=true", headers={"Accept": "application/dicom"})
    assert r.status_code == 406 and "burned-in" in r.get_json()["message"]


def test_every_attribute_the_table_removes_is_gone():
    """Each text attribute of PS3.15 table E.1-1 we remove, set in the input, is absent after."""
    import pydicom

    from service.deidentify import REMOVED

    ds = identified()
    samples = {"DA": "20200101", "TM": "101010", "DT": "20200101101010", "DS": "1.5", "IS": "3", "AS": "042Y",
               "CS": "VALUE", "PN": "Some^Body", "UI": "1.2.3"}
    set_here = []
    for keyword in REMOVED:
        vr = pydicom.datadict.dictionary_VR(pydicom.datadict.tag_for_keyword(keyword))
        if vr in ("SQ", "OB", "OW", "UN", "US", "SS", "UL", "SL", "FL", "FD", "AT", "OB or OW", "US or SS"):
            continue
        setattr(ds, keyword, samples.get(vr, "identifying text"))
        set_here.append(keyword)
    assert len(set_here) > 100
    deidentify(ds, seed(b"secret", "peer", ds.StudyInstanceUID))
    assert [k for k in set_here if k in ds] == []


def test_anonymisation_is_bounded_like_any_conversion(tmp_path):
    from service import create_app

    app = create_app(make_config(tmp_path, transcode_max_bytes=1000))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "ApiKey test-key-0123456789"
    ds = identified()
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                   f"{ds.SOPInstanceUID}?anonymize=true", headers={"Accept": "application/dicom"})
    assert r.status_code == 413
