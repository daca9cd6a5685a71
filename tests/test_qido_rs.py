"""QIDO-RS through the Flask app: resources, formats, warnings and errors."""
import xml.etree.ElementTree as ET

import pytest
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service.wire.dicom_xml import NAMESPACE
from tests.conftest import make_config
from testbed.messages import multipart_body, split_multipart, stow_headers


@pytest.fixture
def archive(client):
    """Two studies: Thompson (CT, 2 series of 2) and O'Brien (MR, 1 series of 1)."""
    ids = {}
    for label, name, modality, series_count, per_series in [("thompson", "Thompson^Ann", "CT", 2, 2),
                                                            ("obrien", "O'Brien^Sean", "MR", 1, 1)]:
        study = generate_uid()
        ids[label] = study
        parts = []
        for s in range(1, series_count + 1):
            series = generate_uid()
            ids[f"{label}-series{s}"] = series
            parts += [ct_instance(study, series, number=n, rows=8, columns=8, series_number=s, patient_name=name,
                                  patient_id=label.upper(), Modality=modality) for n in range(1, per_series + 1)]
        assert client.post("/dicom-web/studies", data=multipart_body(parts), headers=stow_headers()).status_code == 200
    return ids


def get(client, path, **headers):
    return client.get("/dicom-web" + path, headers=headers)


def uids(response, tag="0020000D"):
    return [item[tag]["Value"][0] for item in response.get_json()]


def test_study_search_format(client, archive):
    r = get(client, "/studies?PatientName=THOM%2A")   # percent-encoded wildcard
    assert r.status_code == 200 and r.mimetype == "application/dicom+json"
    [study] = r.get_json()
    assert list(study) == sorted(study)  # attributes in tag order
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Thompson^Ann"}]}
    assert study["00201206"] == {"vr": "IS", "Value": [2]} and study["00201208"] == {"vr": "IS", "Value": [4]}
    assert study["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert study["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert study["00081190"]["Value"] == [f"http://localhost/dicom-web/studies/{archive['thompson']}"]
    for required in ("00080020", "00080030", "00080050", "00080090", "00100020", "00100030", "00100040",
                     "0020000D", "00200010"):
        assert required in study


def test_series_and_instance_resources(client, archive):
    study = archive["thompson"]
    r = get(client, f"/studies/{study}/series")
    assert uids(r, "0020000E") == [archive["thompson-series1"], archive["thompson-series2"]]
    series = r.get_json()[0]
    assert series["00201209"]["Value"] == [2] and series["00080060"]["Value"] == ["CT"]
    assert series["00081190"]["Value"] == [f"http://localhost/dicom-web/studies/{study}/series/{archive['thompson-series1']}"]
    assert "00100010" not in series  # the URL fixes the study: its attributes are not repeated
    assert len(get(client, "/series").get_json()) == 3
    assert "00100010" in get(client, "/series").get_json()[0]
    assert len(get(client, f"/studies/{study}/instances").get_json()) == 4
    r = get(client, f"/studies/{study}/series/{archive['thompson-series2']}/instances")
    instances = r.get_json()
    assert len(instances) == 2 and all(i["0020000E"]["Value"] == [archive["thompson-series2"]] for i in instances)
    assert instances[0]["00081190"]["Value"][0].endswith("/instances/" + instances[0]["00080018"]["Value"][0])
    assert len(get(client, "/instances?Modality=MR").get_json()) == 1


def test_modality_at_study_level_means_modalities_in_study(client, archive):
    assert uids(get(client, "/studies?Modality=MR")) == [archive["obrien"]]
    assert uids(get(client, "/studies?ModalitiesInStudy=CT")) == [archive["thompson"]]


def test_study_keys_below_study_level(client, archive):
    """Series and instance searches by a study's ModalitiesInStudy or SOPClassesInStudy (found by
    the property test: the study's series were read by both queries, so none was left to match)."""
    assert len(get(client, "/series?ModalitiesInStudy=MR").get_json()) == 1
    assert sorted(uids(get(client, "/series?ModalitiesInStudy=CT"), "0020000E")) == \
        sorted([archive["thompson-series1"], archive["thompson-series2"]])
    assert len(get(client, "/instances?ModalitiesInStudy=CT").get_json()) == 4
    assert len(get(client, "/instances?SOPClassesInStudy=1.2.840.10008.5.1.4.1.1.2").get_json()) == 5
    assert get(client, "/instances?SOPClassesInStudy=1.2.3").get_json() == []


def test_includefield(client, archive):
    r = get(client, "/studies?PatientID=THOMPSON&includefield=SOPClassesInStudy,00081030&includefield=00100021")
    [study] = r.get_json()
    assert study["00080062"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert study["00081030"] == {"vr": "LO", "Value": ["CT THORAX"]}
    assert study["00100021"] == {"vr": "LO"}
    r = get(client, f"/studies/{archive['obrien']}/instances?includefield=all")
    [instance] = r.get_json()
    assert {"00100010", "0008103E", "00280010"} <= set(instance)


def test_empty_result_is_200_with_an_empty_array(client, archive):
    r = get(client, "/studies?PatientID=NOBODY")
    assert r.status_code == 200 and r.get_json() == []
    r = get(client, f"/studies/{generate_uid()}/series")
    assert r.status_code == 200 and r.get_json() == []


@pytest.mark.parametrize("path, message", [
    ("/studies?Bogus=1", "Bogus"),
    ("/studies?SOPInstanceUID=1.2.3", "instance level"),
    ("/studies?StudyDate=yesterday", "StudyDate"),
    ("/studies?limit=0", "limit"),
    ("/studies?limit=ten", "limit"),
    ("/studies?offset=-1", "offset"),
    ("/studies?fuzzymatching=maybe", "fuzzymatching"),
    ("/studies?includefield=NotAnAttribute", "NotAnAttribute"),
    ("/studies/1.2.x/series", "not a valid DICOM UID"),
])
def test_bad_queries_are_400(client, archive, path, message):
    r = get(client, path)
    assert r.status_code == 400 and message in r.get_json()["message"]


def test_warnings_for_what_is_not_acted_on(client, archive):
    r = get(client, "/studies?InstitutionName=Hospital&fuzzymatching=true&RequestAttributesSequence.RequestedProcedureID=1")
    warnings = r.headers.getlist("Warning")
    assert r.status_code == 200 and len(r.get_json()) == 2
    assert any("InstitutionName" in w for w in warnings)
    assert any("fuzzymatching" in w for w in warnings)
    assert any("sequence" in w for w in warnings)
    assert all(w.startswith('299 dicomweb "') for w in warnings)
    r = get(client, "/studies?PatientName=thom&fuzzymatching=true")
    assert uids(r) == [archive["thompson"]] and not r.headers.getlist("Warning")


def test_truncation_warning(tmp_path):
    from service import create_app

    client = create_app(make_config(tmp_path, auth_enabled=False, qido_max_results=2)).test_client()
    study = generate_uid()
    parts = [ct_instance(study, generate_uid(), number=n, rows=8, columns=8) for n in range(3)]
    client.post("/dicom-web/studies", data=multipart_body(parts), headers=stow_headers())
    r = client.get("/dicom-web/series")
    assert len(r.get_json()) == 2 and "exceeded the maximum" in r.headers["Warning"]
    r = client.get("/dicom-web/series?offset=2")
    assert len(r.get_json()) == 1 and "Warning" not in r.headers
    r = client.get("/dicom-web/series?limit=2")   # the client asked for a page: no warning
    assert len(r.get_json()) == 2 and "Warning" not in r.headers
    r = client.get("/dicom-web/series?limit=5")
    assert len(r.get_json()) == 2 and "maximum of 2" in r.headers["Warning"]


def test_xml_multipart(client, archive):
    r = get(client, "/studies", Accept='multipart/related; type="application/dicom+xml"')
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("multipart/related")
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert len(parts) == 2
    root = ET.fromstring(parts[0][1])
    name = root.find(f"{{{NAMESPACE}}}DicomAttribute[@tag='00100010']/{{{NAMESPACE}}}PersonName/"
                     f"{{{NAMESPACE}}}Alphabetic/{{{NAMESPACE}}}FamilyName")
    assert name.text == "Thompson"


@pytest.mark.parametrize("accept", ["application/dicom", "text/html", 'multipart/related; type="application/dicom"'])
def test_unacceptable_formats(client, archive, accept):
    assert get(client, "/studies", Accept=accept).status_code == 406


def test_accept_variants(client, archive):
    for accept in ["application/json", "*/*", "application/dicom+json; q=0.9, text/html"]:
        assert get(client, "/studies", Accept=accept).status_code == 200


def test_patient_level_search(client, archive):
    r = get(client, "/patients?PatientName=thom*")
    [patient] = r.get_json()
    assert patient["00100020"]["Value"] == ["THOMPSON"]
    assert patient["00201200"]["Value"] == [1]          # NumberOfPatientRelatedStudies
    assert patient["00201202"]["Value"] == [2] and patient["00201204"]["Value"] == [4]
    assert "00081190" not in patient and "0020000D" not in patient
    assert len(get(client, "/patients").get_json()) == 2
    assert get(client, "/patients?StudyDate=20240115").status_code == 400
    assert get(client, "/patients?PatientName=sean&fuzzymatching=true").get_json()[0]["00100020"]["Value"] == ["OBRIEN"]


def test_includefield_of_attributes_the_catalog_does_not_index(client):
    study, series = generate_uid(), generate_uid()
    parts = [ct_instance(study, series, number=n, rows=8, columns=8, InstitutionName="Hospital Dieu",
                         KVP=str(100 + n)) for n in (1, 2)]
    client.post("/dicom-web/studies", data=multipart_body(parts), headers=stow_headers())
    [found] = get(client, f"/studies?StudyInstanceUID={study}&includefield=InstitutionName,00180060").get_json()
    assert found["00080080"] == {"vr": "LO", "Value": ["Hospital Dieu"]}
    assert found["00180060"]["vr"] == "DS" and found["00180060"]["Value"][0] in (101, 102)
    assert list(found) == sorted(found)
    instances = get(client, f"/studies/{study}/instances?includefield=KVP").get_json()
    assert sorted(i["00180060"]["Value"][0] for i in instances) == [101, 102]
    [series_result] = get(client, f"/studies/{study}/series?includefield=StationName").get_json()
    assert series_result["00081010"] == {"vr": "SH"}      # asked for, absent: empty
    assert not get(client, f"/studies?StudyInstanceUID={study}&includefield=InstitutionName").headers.get("Warning")


@pytest.mark.parametrize("value", [",", "%5C", ",%5C,"])
def test_a_value_of_separators_only_is_a_universal_match(client, archive, value):
    """No value between the separators: the key matches everything (PS3.4 C.2.2.2.3)."""
    everything = uids(get(client, "/studies"))
    r = get(client, f"/studies?AccessionNumber={value}")
    assert r.status_code == 200 and sorted(uids(r)) == sorted(everything) and everything


def test_a_study_without_any_modality_leaves_modalities_in_study_out(client, archive):
    """OHIF 3 reads ModalitiesInStudy's Value unguarded: a study whose instances name no
    Modality answers without the attribute rather than with ``{"vr": "CS"}``, and the others
    of the same answer keep theirs."""
    bare = generate_uid()
    instance = ct_instance(bare, generate_uid(), rows=8, columns=8, patient_name="Bare^Study", Modality="")
    assert client.post("/dicom-web/studies", data=multipart_body([instance]), headers=stow_headers()).status_code == 200
    results = {s["0020000D"]["Value"][0]: s for s in get(client, "/studies?includefield=ModalitiesInStudy").get_json()}
    assert "00080061" not in results[bare]
    assert results[archive["thompson"]]["00080061"] == {"vr": "CS", "Value": ["CT"]}
    [series] = get(client, f"/studies/{bare}/series").get_json()
    assert series["00080060"] == {"vr": "CS"}   # Modality itself stays, empty, as PS3.18 shows Type 2 values
