"""FHIR ImagingStudy over the catalog: searches, the resource's shape (validated with
fhir.resources' R4B models), paging, and a client following the endpoint to the pixels."""
import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from testbed.messages import multipart_body, read, split_multipart, stow_headers


@pytest.fixture
def studies(client):
    made = []
    for n, (date, modality, patient) in enumerate([("20200115", "CT", "PAT-A"), ("20200620", "MR", "PAT-A"),
                                                   ("20210301", "CT", "PAT-B")]):
        study, series = generate_uid(), generate_uid()
        datas = [ct_instance(study, series, number=i + 1, rows=16, columns=16, patient_id=patient, Modality=modality,
                             StudyDate=date, AccessionNumber=f"ACC-{n}") for i in range(2)]
        client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
        made.append((study, series, datas))
    return made


def search(client, query):
    r = client.get(f"/fhir/ImagingStudy?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/fhir+json", r.get_json()
    bundle = r.get_json()
    Bundle.model_validate(bundle)   # FHIR structure
    return bundle


def ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_search_parameters(client, studies):
    a, b, c = (s[0] for s in studies)
    assert set(ids(search(client, "patient=PAT-A"))) == {a, b}
    assert set(ids(search(client, "patient=Patient/PAT-B"))) == {c}
    assert set(ids(search(client, "patient.identifier=PAT-A"))) == {a, b}
    assert ids(search(client, f"identifier=urn:oid:{b}")) == [b]
    assert ids(search(client, "identifier=ACC-2")) == [c]
    assert set(ids(search(client, "modality=http://dicom.nema.org/resources/ontology/DCM|CT"))) == {a, c}
    assert set(ids(search(client, "started=ge2020-06-01&started=le2021-12-31"))) == {b, c}
    assert ids(search(client, "started=2020-01-15")) == [a]
    assert set(ids(search(client, "started=lt2020-06-20&patient=PAT-A"))) == {a}
    assert set(ids(search(client, "started=2020"))) == {a, b}


def test_bundle_total_and_paging(client, studies):
    bundle = search(client, "_count=2")
    assert bundle["total"] >= 3 and len(bundle["entry"]) == 2
    following = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    rest = client.get(following.split("localhost", 1)[1]).get_json()
    assert not set(ids(bundle)) & set(ids(rest))
    assert search(client, "_count=0").get("entry", []) == []


def test_the_resource_and_its_endpoint_lead_to_the_pixels(client, studies):
    study, series, datas = studies[0]
    r = client.get(f"/fhir/ImagingStudy/{study}")
    resource = r.get_json()
    ImagingStudy.model_validate(resource)
    assert resource["status"] == "available" and resource["numberOfSeries"] == 1
    assert resource["numberOfInstances"] == 2 and resource["modality"][0]["code"] == "CT"
    assert resource["subject"]["identifier"]["value"] == "PAT-A" and resource["started"].startswith("2020-01-15")
    [series_entry] = resource["series"]
    assert series_entry["uid"] == series and len(series_entry["instance"]) == 2
    assert series_entry["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"
    address = resource["contained"][0]["address"]
    url = f"{address}/studies/{study}/series/{series}".split("localhost", 1)[1]
    retrieved = split_multipart(*(lambda x: (x.data, x.headers["Content-Type"]))(client.get(url)))
    assert sorted(read(b).SOPInstanceUID for _, b in retrieved) == sorted(read(d).SOPInstanceUID for d in datas)
    assert np.array_equal(read(retrieved[0][1]).pixel_array.shape, (16, 16))


def test_errors_and_authentication(app, client, studies):
    assert client.get("/fhir/ImagingStudy?color=red").status_code == 400
    assert client.get("/fhir/ImagingStudy?started=ge2020-13-45").status_code == 400
    assert client.get("/fhir/ImagingStudy?_count=x").status_code == 400
    assert client.get(f"/fhir/ImagingStudy/{generate_uid()}").status_code == 404
    assert app.test_client().get("/fhir/ImagingStudy").status_code == 401


@pytest.mark.parametrize("public", ["https://pacs.example.org/dicom-web", "https://gw.example.org/ncp/dicom-web"])
def test_links_name_the_public_url_whatever_host_the_client_sends(tmp_path, public):
    """fullUrl, the paging links and the endpoint's address come from DICOMWEB_PUBLIC_URL, as
    DICOMweb RetrieveURLs do, never from the peer's Host header; the landing page's API link too."""
    from service import create_app
    from tests.conftest import API_KEY, make_config

    client = create_app(make_config(tmp_path, public_base_url=public)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    for _ in range(2):
        client.post("/dicom-web/studies", data=ct_instance(generate_uid(), generate_uid(), rows=8, columns=8),
                    content_type="application/dicom")
    r = client.get("/fhir/ImagingStudy?_count=1", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    bundle = r.get_json()
    fhir_base = public.rsplit("/dicom-web", 1)[0] + "/fhir"
    urls = [link["url"] for link in bundle["link"]] + [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(urls) == 3 and all(url.startswith(fhir_base + "/ImagingStudy") for url in urls), urls
    [endpoint] = bundle["entry"][0]["resource"]["contained"]
    assert endpoint["address"] == public
    study = bundle["entry"][0]["resource"]["id"]
    read = client.get(f"/fhir/ImagingStudy/{study}", headers={"Host": "evil.example"}).get_json()
    assert read["contained"][0]["address"] == public
    assert "evil.example" not in client.get("/", headers={"Host": "evil.example"}).get_data(as_text=True)
