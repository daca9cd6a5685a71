"""Anonymisation on retrieve (PS3.15 Annex E, Basic Application Level Confidentiality Profile)."""
import numpy as np
import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service.access.deidentify import deidentify, seed
from tests.conftest import make_config
from testbed.messages import multipart_body, read, split_multipart, stow_headers

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


def _secret_value(vr: str, n: int):
    """A value of ``vr`` that no de-identified answer may contain (its text is searched for)."""
    from pydicom import Dataset

    if vr in ("DA",):
        return f"1971{n % 12 + 1:02d}{n % 28 + 1:02d}"
    if vr == "TM":
        return f"11{n % 60:02d}22.{n:04d}"
    if vr == "DT":
        return f"1971{n % 12 + 1:02d}03{n % 24:02d}{n % 60:02d}11.{n:04d}"
    if vr == "UI":
        return f"1.2.3.4.{n}.99999"
    if vr in ("DS", "IS"):
        return str(31000 + n)
    if vr in ("US", "SS", "UL", "SL"):
        return 31000 + n
    if vr in ("FL", "FD"):
        return 31000.5 + n
    if vr == "AS":
        return "071Y"
    if vr in ("AE", "SH", "CS"):
        return f"SECRET{n:04d}"
    if vr == "PN":
        return f"Secret{n:04d}^Person"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"Nested{n:04d}^Secret"
        item.TextValue = f"SECRET nested text {n:04d}"
        return [item]
    if vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        return f"SECRETBINARY{n:04d}".encode()
    return f"SECRET text value {n:04d}"


def table_dataset():
    """An instance with a secret value in every attribute of table E.1-1 pydicom knows, at the top
    level and again inside a sequence the table does not name (the table applies at every depth)."""
    from pydicom import Dataset
    from pydicom.datadict import dictionary_has_tag, dictionary_VR

    from service.access.deidentify import ACTIONS

    ds = identified()
    inner = Dataset()
    set_here: dict[int, tuple[str, object]] = {}
    for n, tag in enumerate(sorted(ACTIONS)):
        if tag >> 16 in (0x0000, 0x0002) or not dictionary_has_tag(tag) or " or " in dictionary_VR(tag) \
                or tag in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E):
            continue
        vr = dictionary_VR(tag)
        value = _secret_value(vr, n)
        ds.add_new(tag, vr, value)
        inner.add_new(tag, vr, _secret_value(vr, n + 5000))
        set_here[tag] = (vr, value)
    ds.ReferencedSeriesSequence = [inner]
    return ds, set_here


def test_every_attribute_of_the_table_gets_its_action():
    from pydicom.uid import UID

    from service.access.deidentify import ACTIONS, REMOVE

    ds, set_here = table_dataset()
    assert len(set_here) > 550
    original = {tag: ds[tag].value for tag in set_here}
    deidentify(ds, seed(b"secret", "peer", ds.StudyInstanceUID), pixels=False)
    for where in (ds, ds.ReferencedSeriesSequence[0]):
        for tag, (vr, _) in set_here.items():
            action = ACTIONS[tag]
            if action in REMOVE:
                assert tag not in where, f"{tag:08X} ({action}) is still there"
            elif action == "Z":
                assert where[tag].value in (None, "", b"", []), f"{tag:08X} (Z) is not empty"
            elif action in ("D", "Z/D") and vr == "SQ":
                item = where[tag].value[0]
                assert "PatientName" not in item or not item.PatientName and item.TextValue == "ANONYMIZED"
            elif action in ("D", "Z/D"):
                assert where is not ds or where[tag].value != original[tag], f"{tag:08X} ({action}) kept its value"
                assert where[tag].value not in (None, "", b""), f"{tag:08X} ({action}) has no dummy value"
            elif action == "U":
                assert where is not ds or where[tag].value != original[tag] and UID(where[tag].value).is_valid
            else:   # X/Z/U*: references kept, what they hold de-identified
                assert "PatientName" not in where[tag].value[0] or not where[tag].value[0].PatientName
    written = _bytes(ds)
    assert b"SECRET" not in written.upper() and b"NESTED" not in written.upper()
    for tag, (vr, value) in set_here.items():
        if vr in ("DA", "TM", "DT", "UI"):
            assert not _quotes(written, str(value).encode()), f"{tag:08X}: {value} is in the output"


def _quotes(data: bytes, secret: bytes) -> bool:
    """Whether ``data`` holds ``secret`` as a value of its own: a date is 8 digits, which the 39
    random digits of a pseudonymous UID hold by chance now and then; as a value, it has no digit
    beside it."""
    import re

    return re.search(rb"(?<![0-9])" + re.escape(secret) + rb"(?![0-9])", data) is not None


def test_beyond_the_table_private_overlays_urls_and_quoted_identifiers():
    from pydicom import Dataset

    ds = identified()
    ds.add_new(0x60004000, "LT", "overlay drawn for Doe")
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x50000005, "US", 1)
    ds.RetrieveURL = f"https://hospital.example/dicom-web/studies/{ds.StudyInstanceUID}"
    ds.ManufacturerModelName = f"scanner of JANE DOE, id pat-12345, study {ds.StudyInstanceUID}"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    report = Dataset()
    report.ValueType, report.RelationshipType = "TEXT", "CONTAINS"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "121071", "DCM", "Finding"
    report.ConceptNameCodeSequence = [name]
    report.TextValue = "Mrs Doe has no findings"
    ds.ContentSequence = [report]
    ds.add_new(0x00191010, "LO", "private Doe")
    study = ds.StudyInstanceUID
    deidentify(ds, seed(b"secret", "peer", study))
    assert not [e for e in ds if e.tag >> 16 in (0x6000, 0x5000) or e.tag.is_private]
    assert "RetrieveURL" not in ds
    assert ds.ManufacturerModelName == f"scanner of ANONYMIZED ANONYMIZED, id ANONYMIZED, study {ds.StudyInstanceUID}"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    [item] = ds.ContentSequence
    assert item.TextValue == "ANONYMIZED" and item.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert "Basic Application Level Confidentiality Profile" in ds.DeidentificationMethod
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]   # no option applied
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate   # Z: emptied, not shifted


@pytest.mark.parametrize("attributes, refused", [
    ({"Modality": "CT"}, False),
    ({"Modality": "CT", "BurnedInAnnotation": "YES"}, True),
    ({"Modality": "US"}, True),
    ({"Modality": "US", "BurnedInAnnotation": "NO"}, False),
    ({"Modality": "XA"}, True),
    ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, True),
    ({"Modality": "CT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.2", "BurnedInAnnotation": "NO"}, False),
    ({"Modality": "MR", "RecognizableVisualFeatures": "YES"}, True),
])
def test_which_images_are_refused(attributes, refused):
    from service.access.deidentify import NotDeidentifiable

    ds = identified(**attributes)
    if refused:
        with pytest.raises(NotDeidentifiable):
            deidentify(ds, "seed")
    else:
        deidentify(ds, "seed")


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


def _secrets(ds, set_here) -> list[bytes]:
    """What no anonymised answer may contain: every secret text, date and UID set in the instance,
    the patient's name and ID, and the original UIDs."""
    found = [b"SECRET", b"Secret", b"Nested", b"Doe^Jane", b"PAT-12345", b"General Hospital"]
    for vr, value in set_here.values():
        if vr in ("DA", "TM", "DT", "UI"):
            found.append(str(value).encode())
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        found.append(str(ds.get(keyword)).encode())
    return found


def _leaks(response, secrets) -> list[bytes]:
    text = response.get_data() + "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
    return [s for s in secrets if _quotes(text, s) or s.upper() in text.upper() and s.isalpha()]


def test_nothing_identifying_comes_back_on_any_resource(client):
    """An instance with identifying text in every place table E.1-1 names (and in private
    attributes, overlays, report text, URLs and free text), retrieved with anonymize=true from
    every resource that carries patient data: no answer holds any of it, byte for byte."""
    from pydicom import Dataset

    ds, set_here = table_dataset()
    del ds.EncapsulatedDocument, ds.ReferencedSeriesSequence[0].EncapsulatedDocument   # documents are refused
    for keyword in ("BurnedInAnnotation", "RecognizableVisualFeatures"):
        if keyword in ds:
            ds[keyword].value = "NO"
    ds.add_new(0x60004000, "LT", "Secret overlay comment")
    ds.RetrieveURL = f"https://hospital.example/studies/{ds.StudyInstanceUID}"
    ds.ImageComments = f"Secret comment on Doe^Jane {ds.StudyInstanceUID}"
    icon = Dataset()
    icon.Rows = icon.Columns = 16
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit, icon.PixelRepresentation = 7, 0
    icon.PixelData = b"SECRET-ICON-PIXELS" * 14 + b"xxxx"
    ds.IconImageSequence = [icon]
    ds.StudyDescription = "Secret study description"
    r = client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    assert r.status_code == 200, r.get_json()
    secrets = _secrets(ds, set_here)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    instance = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    assert _leaks(client.get(f"{instance}/metadata"), secrets)   # the check can fail: without anonymize, it does
    any_syntax = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answers = {
        "study": client.get(f"/dicom-web/studies/{study}?anonymize=true", headers={"Accept": any_syntax}),
        "series": client.get(f"/dicom-web/studies/{study}/series/{series}?anonymize=true"),
        "instance": client.get(f"{instance}?anonymize=true", headers={"Accept": "application/dicom"}),
        "instance, JPEG-LS": client.get(f"{instance}?anonymize=true", headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'}),
        "metadata": client.get(f"/dicom-web/studies/{study}/metadata?anonymize=true"),
        "metadata, XML": client.get(f"{instance}/metadata?anonymize=true",
                                    headers={"Accept": 'multipart/related; type="application/dicom+xml"'}),
        "frames": client.get(f"{instance}/frames/1?anonymize=true"),
        "pixel data": client.get(f"{instance}/bulk/7FE00010?anonymize=true"),
        "rendered": client.get(f"{instance}/rendered?anonymize=true&annotation=patient,technique"),
        "study rendered by Accept": client.get(f"/dicom-web/studies/{study}?anonymize=true&annotation=patient",
                                               headers={"Accept": 'multipart/related; type="image/png"'}),
        "thumbnail": client.get(f"{instance}/thumbnail?anonymize=true"),
        "WADO-URI": client.get(f"/dicom-web/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                               f"&objectUID={sop}&contentType=application/dicom&anonymize=yes"),
    }
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.get_data()[:200])
        assert _leaks(answer, secrets) == [], name
    # What the profile removed is not there to fetch: the icon (X), a sequence's bulk data.
    assert client.get(f"{instance}/bulk/00880200/1/7FE00010?anonymize=true").status_code == 404
    assert client.get(f"{instance}/bulk/00880200/1/7FE00010").status_code == 200
    # WADO-URI renders no anonymised images: PS3.18 §9.1.2.3 allows anonymize with application/dicom only.
    r = client.get(f"/dicom-web/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                   "&anonymize=yes")
    assert r.status_code == 400 and "anonymize" in r.get_json()["message"]


def test_annotations_of_an_anonymised_image_are_those_of_its_anonymised_copy(client):
    """annotation=patient on an anonymised rendering draws what the anonymised copy holds: the same
    image as the copy itself, stored under its new UIDs and rendered without anonymize."""
    ds = identified(PatientName="Doe^Jane^Identifying^Long^Name", PatientBirthDate="19010203")
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    instance = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    copy = read(client.get(f"{instance}?anonymize=true", headers={"Accept": "application/dicom"}).data)
    client.post("/dicom-web/studies", data=multipart_body([_bytes(copy)]), headers=stow_headers())
    query = "annotation=patient,technique&viewport=256,256"
    anonymised = client.get(f"{instance}/rendered?anonymize=true&{query}", headers={"Accept": "image/png"})
    identified_image = client.get(f"{instance}/rendered?{query}", headers={"Accept": "image/png"})
    of_the_copy = client.get(f"/dicom-web/studies/{copy.StudyInstanceUID}/series/{copy.SeriesInstanceUID}/"
                             f"instances/{copy.SOPInstanceUID}/rendered?{query}", headers={"Accept": "image/png"})
    pixels = [_png(r) for r in (anonymised, identified_image, of_the_copy)]
    assert np.array_equal(pixels[0], pixels[2])
    assert not np.array_equal(pixels[0], pixels[1])   # the identified rendering draws the name
    assert anonymised.headers["ETag"] != identified_image.headers["ETag"]


def _png(response):
    import io

    from PIL import Image
    assert response.status_code == 200, response.get_data()[:200]
    return np.asarray(Image.open(io.BytesIO(response.data)))


def test_images_that_may_show_text_are_refused_on_every_resource(client):
    ultrasound = identified(Modality="US")
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ultrasound)]), headers=stow_headers())
    instance = (f"/dicom-web/studies/{ultrasound.StudyInstanceUID}/series/{ultrasound.SeriesInstanceUID}/"
                f"instances/{ultrasound.SOPInstanceUID}")
    for resource in ("", "/frames/1", "/bulk/7FE00010", "/rendered", "/thumbnail"):
        r = client.get(f"{instance}{resource}?anonymize=true")
        assert r.status_code == 406 and "US image may show identifying text" in r.get_json()["message"], resource
        assert client.get(f"{instance}{resource}").status_code == 200
    assert client.get(f"{instance}/metadata?anonymize=true").status_code == 200   # metadata has no pixels


def test_a_refused_instance_is_left_out_before_the_answer_starts(client):
    study = generate_uid()
    datas = []
    for n, modality in enumerate(("CT", "US", "CT")):
        ds = identified(Modality=modality)
        ds.StudyInstanceUID, ds.InstanceNumber = study, n
        datas.append(_bytes(ds))
    client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    for resource, accept in (("", "*/*"), ("/rendered", "*/*"), ("", 'multipart/related; type="image/jpeg"')):
        r = client.get(f"/dicom-web/studies/{study}{resource}?anonymize=true", headers={"Accept": accept})
        assert r.status_code == 206, resource
        assert "cannot be" in r.headers["Warning"] and "anonymised" in r.headers["Warning"] or \
            "de-identified" in r.headers["Warning"]
        assert len(split_multipart(r.data, r.headers["Content-Type"])) == 2


def test_an_encapsulated_document_is_refused(client):
    from pydicom import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DOC"
    ds.PatientName, ds.MIMETypeOfEncapsulatedDocument = "Doe^Jane", "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 report of Doe^Jane\n%%EOF\n"
    client.post("/dicom-web/studies", data=multipart_body([_bytes(ds)]), headers=stow_headers())
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}?anonymize=true")
    assert r.status_code == 406 and "encapsulated document" in r.get_json()["message"]
