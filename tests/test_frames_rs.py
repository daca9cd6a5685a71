"""WADO-RS frames: byte-equal to pydicom's decoding of the originals, in the order asked."""

import io

import numpy as np
import pydicom
import pydicom.encaps
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from bench.synthetic import ct_instance
from service.frames_rs import parse_frame_list
from service.errors import BadRequest
from tests.conftest import TEST_FILES
from tests.helpers import read, multipart_body, split_multipart, stow_headers

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"




def stored(client, data):
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code == 200, r.data
    ds = read(data)
    return ds, f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def frames_of(response):
    assert response.status_code == 200, response.data
    return split_multipart(response.data, response.headers["Content-Type"])


@pytest.mark.parametrize("text, expected", [("1", [1]), ("3,1,2", [3, 1, 2]), ("5,5", [5, 5])])
def test_parse_frame_list(text, expected):
    assert parse_frame_list(text) == expected


@pytest.mark.parametrize("text", ["", "0", "1,", ",1", "a", "1;2", "-1", "1.5"])
def test_malformed_frame_lists(text):
    with pytest.raises(BadRequest):
        parse_frame_list(text)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian])
@pytest.mark.parametrize("accept", [None, "*/*", OHIF_ACCEPT, 'multipart/related; type="application/octet-stream"'])
def test_multiframe_instance(client, syntax, accept):
    data = ct_instance(generate_uid(), generate_uid(), rows=16, columns=12, frames=7, transfer_syntax=syntax)
    ds, url = stored(client, data)
    pixels = ds.pixel_array
    parts = frames_of(client.get(f"{url}/frames/3,1,7", headers={"Accept": accept} if accept else {}))
    assert [body for _, body in parts] == [pixels[i].tobytes() for i in (2, 0, 6)]
    headers = parts[0][0]
    assert headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert headers["content-location"].endswith(f"{url}/frames/3")


def test_single_frame_and_converted_files(client):
    ds, url = stored(client, ct_instance(generate_uid(), generate_uid(), rows=8, columns=8))
    [(_, body)] = frames_of(client.get(f"{url}/frames/1"))
    assert body == ds.pixel_array.tobytes()
    for name in ["MR_small_bigendian.dcm", "image_dfl.dcm", "SC_rgb_small_odd.dcm"]:
        original = read((TEST_FILES / name).read_bytes())
        r = client.post("/dicom-web/studies", data=multipart_body([(TEST_FILES / name).read_bytes()]),
                        headers=stow_headers())
        if r.status_code != 200:
            continue
        url = (f"/dicom-web/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}/instances/"
               f"{original.SOPInstanceUID}")
        [(_, body)] = frames_of(client.get(f"{url}/frames/1"))
        expected = original.pixel_array
        assert np.array_equal(np.frombuffer(body, dtype=expected.dtype.newbyteorder("<")).reshape(expected.shape),
                              expected), name


def test_errors(client):
    ds, url = stored(client, ct_instance(generate_uid(), generate_uid(), rows=8, columns=8, frames=3))
    assert client.get(f"{url}/frames/4").status_code == 400
    assert client.get(f"{url}/frames/0").status_code == 400
    assert client.get(f"{url}/frames/x").status_code == 400
    assert client.get(f"{url}/frames/1", headers={"Accept": "image/jpeg"}).status_code == 406
    assert client.get(f"{url}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    }).status_code == 406
    study = ds.StudyInstanceUID
    assert client.get(f"/dicom-web/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{generate_uid()}"
                      f"/frames/1").status_code == 404
    jpeg, jpeg_url = stored(client, (TEST_FILES / "JPEG2000.dcm").read_bytes())
    r = client.get(f"{jpeg_url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 406 and "JPEG 2000" in r.get_json()["message"]   # decoding comes with transcoding
    assert client.get(f"{jpeg_url}/frames/2", headers={"Accept": "*/*"}).status_code == 400
    report, report_url = stored(client, (TEST_FILES / "reportsi.dcm").read_bytes())
    assert client.get(f"{report_url}/frames/1").status_code == 404


COMPRESSED = [("JPEG2000.dcm", "image/jp2"), ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
              ("rtdose_rle.dcm", "image/dicom-rle"), ("MR_small_jpeg_ls_lossless.dcm", "image/jls"),
              ("JPGExtended.dcm", "image/jpeg"), ("SC_rgb_jpeg_gdcm.dcm", "image/jpeg")]


@pytest.mark.parametrize("name, media_type", COMPRESSED)
@pytest.mark.parametrize("accept", ["*/*", OHIF_ACCEPT, "multipart/related; type={media}",
                                    "multipart/related; type={legacy}; transfer-syntax={syntax}"])
def test_compressed_frames_are_their_own_fragments(client, name, media_type, accept):
    data = (TEST_FILES / name).read_bytes()
    ds, url = stored(client, data)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    legacy = {"image/jls": "image/x-jls", "image/dicom-rle": "image/x-dicom-rle"}.get(media_type, media_type)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    expected = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=count))
    asked = list(range(count, 0, -1))[:3]
    r = client.get(f"{url}/frames/{','.join(map(str, asked))}",
                   headers={"Accept": accept.format(media=media_type, legacy=legacy, syntax=syntax)})
    assert r.headers["Content-Type"].startswith(f'multipart/related; type="{media_type}"')
    parts = frames_of(r)
    assert [body for _, body in parts] == [expected[n - 1] for n in asked]
    assert parts[0][0]["content-type"] == f"{media_type}; transfer-syntax={syntax}"


def test_split_frames():
    from storage.dataset import split_frames

    fragments = [(108, 10), (126, 20), (154, 4)]   # item headers at 100, 118, 146
    assert split_frames([], fragments, 1) == (tuple(fragments),)
    assert split_frames([], fragments, 3) == tuple((f,) for f in fragments)
    assert split_frames([], fragments, 2) is None
    assert split_frames([0, 46], fragments, 2) == ((fragments[0], fragments[1]), (fragments[2],))
    assert split_frames([0, 46], fragments, 3) is None


def test_a_thousand_frame_instance(client):
    data = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8, frames=1000)
    ds, url = stored(client, data)
    pixels = ds.pixel_array
    parts = frames_of(client.get(f"{url}/frames/1000,1,500,999"))
    assert [body for _, body in parts] == [pixels[i].tobytes() for i in (999, 0, 499, 998)]
    assert client.get(f"{url}/frames/1001").status_code == 400


def test_fragments_split_by_the_extended_offset_table(client):
    """Two fragments a frame and an empty Basic Offset Table: only the Extended one tells the frames apart."""
    import struct

    from pydicom.encaps import encapsulate

    frames = [bytes([n]) * (40 + 2 * n) for n in range(1, 5)]
    data = read(ct_instance(generate_uid(), generate_uid(), rows=8, columns=8))
    data.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
    data.NumberOfFrames = len(frames)
    data.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    data["PixelData"].VR = "OB"
    items, position = [], 8                      # item headers after the empty Basic Offset Table
    while position < len(data.PixelData):
        items.append(position - 8)
        position += 8 + struct.unpack("<I", data.PixelData[position + 4:position + 8])[0]
    offsets = items[::2]                         # each frame starts at every other fragment
    data.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
    data.ExtendedOffsetTableLengths = struct.pack(f"<{len(frames)}Q", *(len(f) for f in frames))
    buffer = io.BytesIO()
    data.save_as(buffer, enforce_file_format=True)
    ds, url = stored(client, buffer.getvalue())
    parts = frames_of(client.get(f"{url}/frames/4,2", headers={"Accept": "*/*"}))
    assert [body for _, body in parts] == [frames[3], frames[1]]
