"""WADO-URI (PS3.18 §9) with raw requests, as curl or an older viewer sends them."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pydicom_test_files
from testbed.messages import multipart_body, read, stow_headers
from tests.test_rendered_rs import reference

FILES = {p.name: p for p in pydicom_test_files()}


def stored(client, name):
    data = FILES[name].read_bytes()
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code in (200, 202)
    ds = read(data)
    return ds, (f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
                f"&objectUID={ds.SOPInstanceUID}")


def test_default_is_a_jpeg_of_the_image(client):
    ds, query = stored(client, "MR_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert np.abs(np.asarray(Image.open(io.BytesIO(r.data))).astype(int) - reference(ds).astype(int)).mean() < 3
    assert client.get(f"/wado?{query}").status_code == 200   # at the server's root too


def test_png_with_window_region_and_size(client):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&windowCenter=40&windowWidth=400")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), reference(ds, window=(40, 400)))
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&region=0.25,0.25,0.75,0.75&columns=32")
    image = Image.open(io.BytesIO(r.data))
    assert image.size == (32, 32)
    expected = Image.fromarray(reference(ds)[32:96, 32:96]).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(image).astype(int) - np.asarray(expected).astype(int)).max() <= 1


def test_application_dicom_in_a_transfer_syntax(client):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=application/dicom")
    assert r.headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert read(r.data).SOPInstanceUID == ds.SOPInstanceUID
    r = client.get(f"/dicom-web/wado?{query}&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.80")
    converted = read(r.data)
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(converted.pixel_array, ds.pixel_array)


def test_multi_frame_frame_number(client):
    ds, query = stored(client, "examples_ybr_color.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&frameNumber=5")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), reference(ds, frame=4))
    assert client.get(f"/dicom-web/wado?{query}&frameNumber=31").status_code == 400


def test_structured_report_as_text(client):
    ds, query = stored(client, "reportsi.dcm")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert b"<ul" in r.data
    text = client.get(f"/dicom-web/wado?{query}&contentType=text/plain").data.decode()
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning in text
    assert client.get(f"/dicom-web/wado?{query}&contentType=image/jpeg").status_code == 406


@pytest.mark.parametrize("change, named", [
    ("requestType=WADO&", "requestType"), ("studyUID=", "studyUID"), ("&objectUID=", "objectUID"),
])
def test_missing_parameters_are_named(client, change, named):
    ds, query = stored(client, "CT_small.dcm")
    broken = query.replace(change, "", 1) if not change.startswith("&") else query.split(change)[0]
    if change == "studyUID=":
        broken = query.replace(f"studyUID={ds.StudyInstanceUID}", "studyUID=")
    r = client.get(f"/dicom-web/wado?{broken}")
    assert r.status_code == 400 and named in r.get_json()["message"]


@pytest.mark.parametrize("extra, named", [
    ("&contentType=application/dicom&rows=10", "rows"),
    ("&contentType=application/dicom&windowCenter=1&windowWidth=2", "windowCenter"),
    ("&windowCenter=40", "windowWidth"),
    ("&contentType=image/png&imageQuality=50", "imageQuality"),
    ("&imageQuality=500", "imageQuality"),
    ("&transferSyntax=1.2.840.10008.1.2.1", "transferSyntax"),
    ("&anonymize=yes", "anonymize"),
    ("&region=0.5,0.5,0.2,0.9", "region"),
    ("&rows=-4", "rows"),
    ("&presentationUID=1.2.3", "presentationUID"),
])
def test_contradictory_parameters_are_named(client, extra, named):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}{extra}")
    assert r.status_code == 400 and named in r.get_json()["message"], r.get_json()


def test_unknown_object_and_type(client):
    ds, query = stored(client, "CT_small.dcm")
    assert client.get(f"/dicom-web/wado?{query.replace(ds.SOPInstanceUID, '1.2.3.4')}").status_code == 404
    assert client.get(f"/dicom-web/wado?{query}&contentType=video/mpeg").status_code == 406
