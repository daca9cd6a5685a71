"""STOW-RS of metadata (DICOM JSON or XML) with bulk data parts (PS3.18 §10.5)."""
import io
import shutil
import subprocess

import numpy as np
import orjson
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from service.wire.dicom_xml import json_to_xml
from tests.conftest import in_ci
from testbed.messages import read, split_multipart

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def body(parts, boundary="meta-b"):
    chunks = []
    for headers, data in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        chunks.append(f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def post(client, parts, kind="application/dicom+json", study=None):
    return client.post(f"/dicom-web/studies{'/' + study if study else ''}", data=body(parts),
                       headers={"Content-Type": f'multipart/related; type="{kind}"; boundary=meta-b'})


def photo(width=64, height=48, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = ((np.sin(x / 7) + np.cos(y / 5)) * 60 + 128).clip(0, 255).astype(np.uint8)
    pixels = np.stack([base, base[::-1], base[:, ::-1]], -1) if mode == "RGB" else base
    pixels = (pixels.astype(int) + rng.integers(-3, 4, pixels.shape)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "JPEG", quality=95)
    return pixels, out.getvalue()


def sc_model(study, **extra):
    model = {"00080016": {"vr": "UI", "Value": [SECONDARY_CAPTURE]},
             "0020000D": {"vr": "UI", "Value": [study]},
             "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]},
             "00100020": {"vr": "LO", "Value": ["PHOTO-1"]},
             "00080060": {"vr": "CS", "Value": ["XC"]}}
    model.update(extra)
    return model


def stored_instance(client, response):
    assert response.status_code == 200, response.get_json()
    [item] = response.get_json()["00081199"]["Value"]
    url = item["00081190"]["Value"][0].split("/dicom-web", 1)[1]
    r = client.get("/dicom-web" + url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                          "transfer-syntax=*"})
    [(_, data)] = split_multipart(r.data, r.headers["Content-Type"])
    return read(data), url, data


def test_quick_start_xml_metadata_and_a_jpeg_photo(client, tmp_path):
    """The quick-start's example: Secondary Capture, XML metadata without pixel description,
    a camera photo as image/jpeg; stored, retrieved, read by pydicom and DCMTK, rendered back."""
    study = generate_uid()
    pixels, jpeg = photo()
    model = sc_model(study, **{"7FE00010": {"vr": "OB", "BulkDataURI": "photo.jpg"}})
    r = post(client, [({"Content-Type": "application/dicom+xml"}, json_to_xml(model)),
                      ({"Content-Type": "image/jpeg", "Content-Location": "photo.jpg"}, jpeg)],
             kind="application/dicom+xml")
    ds, url, data = stored_instance(client, r)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated) == (48, 64, 3, 8)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen" and ds.SOPInstanceUID and ds.SeriesInstanceUID
    assert ds.file_meta.ImplementationClassUID
    assert np.abs(ds.pixel_array.astype(int) - pixels.astype(int)).mean() < 4
    rendered = client.get(f"/dicom-web{url}/rendered", headers={"Accept": "image/png"})
    assert np.abs(np.asarray(Image.open(io.BytesIO(rendered.data))).astype(int) - pixels.astype(int)).mean() < 4
    assert client.get(f"/dicom-web/studies?StudyInstanceUID={study}").get_json()[0]["00201208"]["Value"] == [1]
    if shutil.which("dcmdump"):
        (tmp_path / "sc.dcm").write_bytes(data)
        dump = subprocess.run(["dcmdump", "-E", str(tmp_path / "sc.dcm")], capture_output=True, text=True)
        assert dump.returncode == 0 and "E:" not in dump.stderr
    elif in_ci():
        pytest.fail("DCMTK is not installed")


def test_json_metadata_and_octet_stream_pixels_of_a_16_bit_ct(client):
    study = generate_uid()
    pixels = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 3) % 4096
    model = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
             "0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [generate_uid()]},
             "00080018": {"vr": "UI", "Value": [sop := generate_uid()]},
             "00080060": {"vr": "CS", "Value": ["CT"]},
             "00280010": {"vr": "US", "Value": [32]}, "00280011": {"vr": "US", "Value": [40]},
             "00280002": {"vr": "US", "Value": [1]}, "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
             "00280100": {"vr": "US", "Value": [16]}, "00280101": {"vr": "US", "Value": [12]},
             "00280102": {"vr": "US", "Value": [11]}, "00280103": {"vr": "US", "Value": [0]},
             "7FE00010": {"vr": "OW", "BulkDataURI": f"http://client/pixels/{sop}"}}
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps([model])),
                      ({"Content-Type": "application/octet-stream", "Content-Location": f"http://client/pixels/{sop}"},
                       pixels.astype("<u2").tobytes())])
    ds, _, _ = stored_instance(client, r)
    assert ds.SOPInstanceUID == sop and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, pixels)


def test_an_encapsulated_pdf(client):
    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    model = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.104.1"]},
             "0020000D": {"vr": "UI", "Value": [generate_uid()]},
             "00420012": {"vr": "LO", "Value": ["application/pdf"]},
             "00420011": {"vr": "OB", "BulkDataURI": "report.pdf"}}
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps(model)),
                      ({"Content-Type": "application/pdf", "Content-Location": "report.pdf"}, pdf)])
    ds, _, _ = stored_instance(client, r)
    assert ds.EncapsulatedDocument.rstrip(b"\0") == pdf.rstrip(b"\0")


def test_a_two_frame_jpeg_and_inline_binary(client):
    frames = [photo(32, 32, "L", seed=n) for n in (1, 2)]
    model = sc_model(generate_uid(), **{
        "00280008": {"vr": "IS", "Value": [2]},
        "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
        "7FE00010": {"vr": "OB", "BulkDataURI": "frames"}})
    model["00090010"] = {"vr": "LO", "Value": ["TEST"]}
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps(model)),
                      ({"Content-Type": "image/jpeg", "Content-Location": "frames"}, frames[0][1] + frames[1][1])])
    ds, _, _ = stored_instance(client, r)
    assert ds.NumberOfFrames == 2 and ds.PhotometricInterpretation == "MONOCHROME2"
    for n, (pixels, _) in enumerate(frames):
        assert np.abs(ds.pixel_array[n].astype(int) - pixels.astype(int)).mean() < 3
    assert ds[0x00091010].value == b"\x00\x01\x02\x00"   # OB values are padded to an even length


def test_failures_have_reasons_and_nothing_is_half_stored(client):
    study = generate_uid()
    _, jpeg = photo()
    good = sc_model(study)
    contradiction = sc_model(study, **{"00280010": {"vr": "US", "Value": [50]},
                                       "7FE00010": {"vr": "OB", "BulkDataURI": "photo"}})
    dangling = sc_model(study, **{"7FE00010": {"vr": "OB", "BulkDataURI": "nowhere"}})
    no_class = {"0020000D": {"vr": "UI", "Value": [study]}}
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps([good, contradiction, dangling,
                                                                                no_class])),
                      ({"Content-Type": "image/jpeg", "Content-Location": "photo"}, jpeg)])
    assert r.status_code == 202
    failed = r.get_json()["00081198"]["Value"]
    reasons = [f["00081197"]["Value"][0] for f in failed]
    assert reasons == [0xA900, 0xC000, 0xA900]
    assert len(r.get_json()["00081199"]["Value"]) == 1
    messages = " ".join(r.headers.getlist("Warning"))
    assert "Rows is 50 in the metadata but 48" in messages and "nowhere" in messages and "SOPClassUID" in messages


@pytest.mark.parametrize("parts, status", [
    ([({"Content-Type": "application/dicom+json"}, b"{not json")], 409),
    ([({"Content-Type": "application/dicom+xml"}, b"<NativeDicomModel><oops></NativeDicomModel>")], 409),
    ([({"Content-Type": "application/dicom+json"}, b"{}"), ({"Content-Type": "image/jpeg"}, b"\xff\xd8")], 400),
    ([({"Content-Type": "image/jpeg", "Content-Location": "x"}, b"\xff\xd8")], 400),
])
def test_malformed_requests(client, parts, status):
    kind = "application/dicom+xml" if "xml" in parts[0][0]["Content-Type"] else "application/dicom+json"
    r = post(client, parts, kind=kind)
    assert r.status_code == status, r.get_json()


def test_xml_external_entities_are_never_resolved(client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xml = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<NativeDicomModel><DicomAttribute tag="00100010" vr="PN"><PersonName number="1"><Alphabetic>'
           "<FamilyName>&x;</FamilyName></Alphabetic></PersonName></DicomAttribute></NativeDicomModel>").encode()
    r = post(client, [({"Content-Type": "application/dicom+xml"}, xml)], kind="application/dicom+xml")
    assert r.status_code == 409 and "TOP-SECRET" not in r.get_data(as_text=True) + str(r.headers)
    assert "Entities" in r.headers["Warning"]


@pytest.mark.parametrize("media, syntax", [("image/jls", "1.2.840.10008.1.2.4.80"),
                                           ("image/x-jls", "1.2.840.10008.1.2.4.80"),
                                           ("image/jp2", "1.2.840.10008.1.2.4.90"),
                                           ("image/jphc", "1.2.840.10008.1.2.4.201")])
def test_jpeg_ls_and_jpeg_2000_parts_describe_themselves(client, media, syntax):
    from transcode.codecs import PixelDescription, encode_frame

    pixels = ((np.arange(48 * 40).reshape(48, 40) * 7) % 4096).astype("<u2")
    stream, _ = encode_frame(pixels.tobytes(), PixelDescription(48, 40, 1, 16, 12, 0, "MONOCHROME2"), syntax)
    model = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
             "0020000D": {"vr": "UI", "Value": [generate_uid()]},
             "7FE00010": {"vr": "OB", "BulkDataURI": "px"}}
    r = post(client, [({"Content-Type": "application/dicom+json"}, orjson.dumps(model)),
                      ({"Content-Type": media, "Content-Location": "px"}, stream)])
    ds, _, _ = stored_instance(client, r)
    assert ds.file_meta.TransferSyntaxUID == syntax
    # OpenJPH codes the whole 16-bit word (imagecodecs takes no bit depth), and the part says so
    assert (ds.Rows, ds.Columns, ds.BitsStored, ds.BitsAllocated) == (48, 40, 16 if media == "image/jphc" else 12, 16)
    assert np.array_equal(ds.pixel_array, pixels)
