"""Inputs a careless or hostile peer sends: each answered with a 4xx naming what was wrong,
never a 500 (the guard in conftest.py fails any test whose request reached that path)."""
import io
import struct

import numpy as np
import orjson
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from testbed.messages import multipart_body, stow_headers
from tests.test_stow_metadata import post, sc_model


def store(client, *datas):
    r = client.post("/dicom-web/studies", data=multipart_body(list(datas)), headers=stow_headers())
    assert r.status_code == 200, r.get_json()


@pytest.fixture
def instance(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    store(client, ct_instance(study, series, sop))
    return f"/dicom-web/studies/{study}/series/{series}/instances/{sop}", (study, series, sop)


def message(response) -> str:
    return response.get_json()["message"]


def test_a_boundary_over_200_characters(client):
    boundary = "b" * 250
    r = client.post("/dicom-web/studies", data=f"--{boundary}\r\n\r\nx\r\n--{boundary}--\r\n".encode(),
                    headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 400 and "boundary" in message(r)


def test_an_empty_single_part_body_is_400(client):
    r = client.post("/dicom-web/studies", data=b"", headers={"Content-Type": "application/dicom"})
    assert r.status_code == 400 and "empty" in message(r)


def test_refusals_carry_no_advice_meant_for_programmers(client):
    r = client.post("/dicom-web/studies", data=multipart_body([b"not dicom at all"]), headers=stow_headers())
    assert r.status_code == 409
    assert "force" not in r.headers["Warning"] and "DICM" in r.headers["Warning"]


@pytest.mark.parametrize("attribute, expected", [
    ({"00100010": {"vr": "PN", "Value": 5}}, "Value is not an array"),
    ({"00280010": {"vr": "US", "Value": [70000]}}, "(0028,0010)"),
])
def test_json_metadata_values_their_vr_cannot_hold_fail_the_instance(client, attribute, expected):
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps([sc_model(generate_uid(),
                                                                                          **attribute)]))])
    assert r.status_code == 409 and expected in r.headers["Warning"]


def _nested(depth: int) -> str:
    return '<DicomAttribute tag="00081115" vr="SQ"><Item number="1">' * depth \
        + "</Item></DicomAttribute>" * depth


@pytest.mark.parametrize("kind", ["xml", "json"])
def test_sequences_nested_1200_deep(client, kind):
    study = generate_uid()
    if kind == "xml":
        document = ('<?xml version="1.0"?><NativeDicomModel><DicomAttribute tag="00080016" vr="UI"><Value '
                    'number="1">1.2.840.10008.5.1.4.1.1.7</Value></DicomAttribute>' + _nested(1200)
                    + "</NativeDicomModel>").encode()
        r = post(client, [({"Content-Type": "application/dicom+xml"}, document)], "application/dicom+xml")
    else:
        # 300 sequences are 900 levels of JSON: orjson itself reads no deeper than 1,024
        nested = '{"00081115": {"vr": "SQ", "Value": [' * 300 + "{}" + "]}}" * 300
        document = orjson.dumps([sc_model(study)])[:-2] + b', "00081115": {"vr": "SQ", "Value": [' \
            + nested.encode() + b"]}}]"
        r = post(client, [({"Content-Type": "application/dicom+json"}, document)])
    assert r.status_code == 409 and "nested more than 64 levels" in r.headers["Warning"]


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _j2k_header(xsiz: int, ysiz: int, xo: int = 0, yo: int = 0) -> bytes:
    siz = struct.pack(">HIIIIIIIIH", 0, xsiz, ysiz, xo, yo, xsiz, ysiz, 0, 0, 1) + bytes([7, 1, 1])
    return b"\xff\x4f\xff\x51" + struct.pack(">H", len(siz) + 2) + siz + b"\xff\xd9"


def _truncated_jpeg() -> bytes:
    data = _jpeg()
    sof = data.index(b"\xff\xc0")
    return data[:sof + 6]


def _truncated_jpeg_ls() -> bytes:
    # SOI, SOF55 (8-bit, 16 x 16, one component), then an SOS whose segment is cut short
    return b"\xff\xd8\xff\xf7\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00\xff\xda\x00\x08"


@pytest.mark.parametrize("media_type, data", [
    ("image/jpeg", _truncated_jpeg()),
    ("image/jls", _truncated_jpeg_ls()),
    ("image/jp2", _j2k_header(16, 16)[:20]),
    ("image/jp2", _j2k_header(16, 16, xo=32)),   # image area negative
    ("image/jp2", _j2k_header(0, 16)),
])
def test_damaged_codestream_headers_in_bulk_parts(client, media_type, data):
    model = sc_model(generate_uid(), **{"7FE00010": {"vr": "OB", "BulkDataURI": "pixels"}})
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps([model])),
                      ({"Content-Type": media_type, "Content-Location": "pixels"}, data)])
    assert r.status_code == 409, r.get_json()
    assert f"the {media_type} part" in r.headers["Warning"]


def test_a_range_with_thousands_of_digits(client, instance):
    url, _ = instance
    r = client.get(f"{url}/bulk/7FE00010", headers={"Accept": "application/octet-stream",
                                                    "Range": "bytes=" + "9" * 4400 + "-"})
    assert r.status_code == 416 and "Range" in message(r)


def test_bulk_data_items_are_numbered_from_one(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    from pydicom import Dataset
    icon = Dataset()
    icon.Rows = icon.Columns = 32
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit, icon.PixelRepresentation = 7, 0
    icon.PixelData = bytes(range(256)) * 4
    store(client, ct_instance(study, series, sop, IconImageSequence=[icon]))
    url = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulk/00880200"
    assert client.get(f"{url}/1/7FE00010").status_code == 200
    assert client.get(f"{url}/0/7FE00010").status_code == 404


@pytest.mark.parametrize("query, named", [
    ("offset=" + str(2 ** 63), "offset"),
    ("SeriesNumber=" + str(2 ** 63), "SeriesNumber"),
    ("InstanceNumber=" + "9" * 5000, "InstanceNumber"),
    ("PatientName=" + "\\".join(f"a*{i}" for i in range(1100)), "PatientName"),
    ("PatientID=a%00b", "PatientID"),
])
def test_qido_values_out_of_bounds(client, query, named):
    r = client.get(f"/dicom-web/instances?{query}")
    assert r.status_code == 400 and named in message(r), r.data


def test_a_huge_limit_is_capped_with_a_warning(client):
    r = client.get(f"/dicom-web/studies?limit={2 ** 63}")
    assert r.status_code == 200 and "at most 1000" in r.headers["Warning"]


@pytest.mark.parametrize("query, status", [
    ("_offset=" + str(2 ** 63), 400), ("_count=" + str(2 ** 63), 400),
    ("started=gt9999-12-31", 200), ("started=lt0001-01-01", 200), ("started=9999-12", 200),
])
def test_fhir_bounds(client, instance, query, status):
    r = client.get(f"/fhir/ImagingStudy?{query}")
    assert r.status_code == status, r.data
    if status == 200:
        assert r.get_json()["total"] == 0


@pytest.mark.parametrize("query, named", [
    ("rows=3000000000", "rows"), ("columns=9000", "columns"), ("windowCenter=nan&windowWidth=100", "windowCenter"),
    ("windowCenter=40&windowWidth=inf", "windowWidth"),
])
def test_wado_uri_bounds(client, instance, query, named):
    _, (study, series, sop) = instance
    r = client.get(f"/dicom-web/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&{query}")
    assert r.status_code == 400 and named in message(r)


def test_viewport_bounds(client, instance):
    url, _ = instance
    r = client.get(f"{url}/rendered?viewport=8192,8192")
    assert r.status_code == 400 and "pixels" in message(r)
    r = client.get(f"{url}/rendered?viewport=64,64,100,100,20,20")
    assert r.status_code == 400 and "outside" in message(r)
    # A region reaching beyond the image draws the part inside it (179 Mpx were allocated before).
    r = client.get(f"{url}/rendered?viewport=100,100,0,0,20000,9000", headers={"Accept": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (100, 100)


def test_damaged_pixel_descriptions(client):
    study, series = generate_uid(), generate_uid()
    no_frames, spacing = generate_uid(), generate_uid()
    store(client, ct_instance(study, series, no_frames, NumberOfFrames=0),
          ct_instance(study, series, spacing, PixelSpacing=[1e10, 1]))
    base = f"/dicom-web/studies/{study}/series/{series}/instances"
    assert client.get(f"{base}/{no_frames}/rendered", headers={"Accept": "image/gif"}).status_code == 404
    assert client.get(f"{base}/{no_frames}/frames/1").status_code == 400
    r = client.get(f"{base}/{no_frames}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                             "transfer-syntax=1.2.840.10008.1.2.4.80"})
    assert r.status_code == 406
    # A spacing ratio of 1e10 is damage, not geometry: the image is drawn square.
    r = client.get(f"{base}/{spacing}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (64, 64)


def test_an_animation_beyond_the_budget_is_413(client):
    """An animated GIF draws at most 256 Mpx (the time an answer takes; its frames stream)."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    store(client, ct_instance(study, series, sop, rows=16, columns=16, frames=300))
    url = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered"
    r = client.get(f"{url}?viewport=1024,1024", headers={"Accept": "image/gif"})
    assert r.status_code == 413 and "fewer frames" in message(r)
    r = client.get(url, headers={"Accept": "image/gif"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).n_frames == 300


@pytest.mark.parametrize("attributes", [
    {"SeriesNumber": "9999999999"},            # IS beyond 32 bits
    {"PatientID": "P" * 450},                  # longer than any column
    {"StudyDescription": "with\x00NUL"},       # PostgreSQL text refuses NUL
])
def test_values_the_catalog_cannot_hold_do_not_cost_the_batch(tmp_path, catalog_url, attributes):
    from service import create_app
    from tests.conftest import API_KEY, make_config

    client = create_app(make_config(tmp_path, catalog_url=catalog_url)).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), rows=8, columns=8, number=n) for n in range(3)]
    datas.append(ct_instance(study, generate_uid(), rows=8, columns=8, **attributes))
    r = client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    assert r.status_code == 200, r.get_json()
    assert len(client.get(f"/dicom-web/studies/{study}/instances").get_json()) == 4


def test_a_batch_member_the_catalog_refuses_fails_alone(client, app, monkeypatch):
    """Whatever the catalog refuses (here: one instance made to fail), the others of its batch are stored."""
    from storage import Catalog

    register = Catalog.register_many
    doomed = generate_uid()

    def refusing(catalog, items, replace=False):
        if any(item.header.sop_instance_uid == doomed for item in items):
            raise RuntimeError("the catalog refuses this one")
        return register(catalog, items, replace)

    monkeypatch.setattr(Catalog, "register_many", refusing)
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), rows=8, columns=8) for _ in range(4)]
    datas.insert(2, ct_instance(study, generate_uid(), doomed, rows=8, columns=8))
    r = client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    assert r.status_code == 202
    [failed] = r.get_json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [doomed] and failed["00081197"]["Value"] == [0x0110]
    assert len(r.get_json()["00081199"]["Value"]) == 4


def test_a_number_of_frames_its_data_cannot_hold(client):
    """NumberOfFrames is the sender's word: a billion frames in a few KB is 406 before any list
    of them is made (it was built whole)."""
    import io as _io

    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = dcmread(_io.BytesIO(ct_instance(study, series, sop, rows=8, columns=8)))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = 1_000_000_000
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    out = _io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    store(client, out.getvalue())
    base = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    for accept in ("application/octet-stream", 'multipart/related; type="image/dicom-rle"; transfer-syntax=*'):
        r = client.get(f"{base}/bulk/7FE00010", headers={"Accept": accept})
        assert r.status_code == 406, (accept, r.status_code)
    assert client.get(f"{base}/rendered", headers={"Accept": "image/gif"}).status_code == 413
