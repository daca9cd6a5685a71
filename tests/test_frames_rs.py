"""WADO-RS frames: byte-equal to pydicom's decoding of the originals, in the order asked."""

import io

import numpy as np
import pydicom
import pydicom.encaps
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from testbed.synthetic import ct_instance
from service.web import parse_frame_list
from service.errors import BadRequest
from tests.conftest import TEST_FILES
from testbed.messages import read, multipart_body, split_multipart, stow_headers

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
    assert client.get(f"{url}/frames/1", headers={"Accept": "image/png"}).status_code == 406
    assert client.get(f"{url}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    }).status_code == 406
    study = ds.StudyInstanceUID
    assert client.get(f"/dicom-web/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{generate_uid()}"
                      f"/frames/1").status_code == 404
    jpeg, jpeg_url = stored(client, (TEST_FILES / "JPEG2000.dcm").read_bytes())
    r = client.get(f"{jpeg_url}/frames/1", headers={"Accept": "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406 and "image/jls (1.2.840.10008.1.2.4.80)" in r.get_json()["message"]   # 16-bit
    assert client.get(f"{jpeg_url}/frames/2", headers={"Accept": "*/*"}).status_code == 400
    report, report_url = stored(client, (TEST_FILES / "reportsi.dcm").read_bytes())
    assert client.get(f"{report_url}/frames/1").status_code == 404


COMPRESSED = [("JPEG2000.dcm", "image/jp2"), ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
              ("rtdose_rle.dcm", "image/dicom-rle"), ("MR_small_jpeg_ls_lossless.dcm", "image/jls"),
              ("JPGExtended.dcm", "image/jpeg"), ("SC_rgb_jpeg_gdcm.dcm", "image/jpeg")]


@pytest.mark.parametrize("name, media_type", COMPRESSED)
@pytest.mark.parametrize("accept", [OHIF_ACCEPT, "multipart/related; type={legacy}; transfer-syntax={syntax}",
                                    "{media}; transfer-syntax={syntax}", "image/*; transfer-syntax=*"])
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
    parts = frames_of(client.get(f"{url}/frames/4,2", headers={"Accept": OHIF_ACCEPT}))
    assert [body for _, body in parts] == [frames[3], frames[1]]


def test_native_ybr_full_422_frames_are_their_stored_subsampled_bytes(client):
    ds, url = stored(client, (TEST_FILES / "SC_ybr_full_422_uncompressed.dcm").read_bytes())
    [(headers, body)] = frames_of(client.get(f"{url}/frames/1"))
    assert body == ds.PixelData[:ds.Rows * ds.Columns * 2]


DECODABLE = ["JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "SC_rgb_jpeg_gdcm.dcm", "examples_ybr_color.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]


@pytest.mark.parametrize("name", DECODABLE)
@pytest.mark.parametrize("accept", ["*/*", None, 'multipart/related; type="application/octet-stream"'])
def test_frames_are_decoded_to_native_pixels_by_default(client, name, accept):
    """PS3.18 table 8.7.3-5: the default for frames is application/octet-stream, native pixels."""
    ds, url = stored(client, (TEST_FILES / name).read_bytes())
    count = int(ds.get("NumberOfFrames", 1) or 1)
    asked = list(range(count, 0, -1))[:3]
    r = client.get(f"{url}/frames/{','.join(map(str, asked))}", headers={"Accept": accept} if accept else {})
    assert r.headers["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
    parts = frames_of(r)
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    pixels = ds.pixel_array if count > 1 else ds.pixel_array[None]
    expected = [pixels[n - 1].astype(pixels.dtype.newbyteorder("<")).tobytes() for n in asked]
    assert [body for _, body in parts] == expected


ENCODED = [("image/jls", None, "1.2.840.10008.1.2.4.80"), ("image/x-jls", None, "1.2.840.10008.1.2.4.80"),
           ("image/jls", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.81"),
           ("image/jp2", None, "1.2.840.10008.1.2.4.90"), ("image/jp2", "1.2.840.10008.1.2.4.91", None),
           ("image/jpeg", None, "1.2.840.10008.1.2.4.70"), ("image/jpeg", "1.2.840.10008.1.2.4.57", None),
           ("image/jpeg", "1.2.840.10008.1.2.4.51", None),
           ("image/dicom-rle", None, "1.2.840.10008.1.2.5"), ("image/x-dicom-rle", None, "1.2.840.10008.1.2.5"),
           ("image/jphc", None, "1.2.840.10008.1.2.4.201"), ("image/jphc", "1.2.840.10008.1.2.4.202", None),
           ("image/jphc", "1.2.840.10008.1.2.4.203", None), ("image/jxl", None, "1.2.840.10008.1.2.4.110"),
           ("image/jxl", "1.2.840.10008.1.2.4.112", None)]


@pytest.mark.parametrize("media, asked_syntax, syntax", ENCODED)
def test_uncompressed_frames_are_encoded_as_asked(client, media, asked_syntax, syntax):
    from transcode.codecs import decode_frame, PixelDescription

    syntax = syntax or asked_syntax
    data = ct_instance(generate_uid(), generate_uid(), rows=64, columns=48, frames=3, BitsStored=12,
                       PixelRepresentation=0, seed=3)
    ds, url = stored(client, data)
    suffix = f"; transfer-syntax={asked_syntax}" if asked_syntax else ""
    r = client.get(f"{url}/frames/3,1", headers={"Accept": f"multipart/related; type={media}{suffix}"})
    canonical = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}.get(media, media)
    assert r.headers["Content-Type"].startswith(f'multipart/related; type="{canonical}"')
    parts = frames_of(r)
    assert parts[0][0]["content-type"] == f"{canonical}; transfer-syntax={syntax}"
    description = PixelDescription.from_dataset(ds)
    for (_, body), number in zip(parts, (3, 1)):
        decoded, _ = decode_frame(body, description, syntax)
        original = ds.pixel_array[number - 1]
        error = np.abs(np.frombuffer(decoded, original.dtype).reshape(original.shape).astype(float) - original)
        if syntax.endswith((".80", ".90", ".70", ".57", ".5", ".201", ".202", ".110")):
            assert error.max() == 0
        elif syntax.endswith(".81"):
            assert error.max() <= 2   # near-lossless holds its bound even on this noise; the lossy
            # JPEG and JPEG 2000 errors are bounded on real images in test_transcode_round_trip


def test_compressed_frames_are_transcoded_to_another_syntax(client):
    ds, url = stored(client, (TEST_FILES / "MR_small_jp2klossless.dcm").read_bytes())
    parts = frames_of(client.get(f"{url}/frames/1", headers={"Accept": "multipart/related; type=image/jls"}))
    assert parts[0][0]["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    from transcode.codecs import PixelDescription, decode_frame
    decoded, _ = decode_frame(parts[0][1], PixelDescription.from_dataset(ds), "1.2.840.10008.1.2.4.80")
    assert decoded == ds.pixel_array.astype("<i2").tobytes()


def test_undecodable_frames_are_406(client):
    ds, url = stored(client, (TEST_FILES / "JPEG2000-embedded-sequence-delimiter.dcm").read_bytes())
    r = client.get(f"{url}/frames/1")
    assert r.status_code == 406 and "transfer-syntax=*" in r.get_json()["message"]


def test_the_accept_query_parameter_overrides_the_header(client):
    """PS3.18 §8.3.3.1: for links a browser follows, where no header can be set."""
    data = ct_instance(generate_uid(), generate_uid(), rows=40, columns=40, BitsStored=12, PixelRepresentation=0)
    ds, url = stored(client, data)
    r = client.get(f"{url}/frames/1?accept=multipart%2Frelated%3B%20type%3D%22image%2Fjls%22",
                   headers={"Accept": "application/octet-stream"})
    assert frames_of(r)[0][0]["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"])
def test_frames_split_over_fragments_without_an_offset_table_are_told_apart(client, syntax):
    """PS3.5 A.4 lets a frame span fragments with an empty Basic Offset Table: each frame is found
    by the end marker of its codestream, so that frames can be sent as stored and decoded."""
    from transcode.codecs import PixelDescription, encode_frame

    original = read(ct_instance(generate_uid(), generate_uid(), rows=64, columns=48, frames=3, seed=4))
    description = PixelDescription.from_dataset(original)
    size = description.frame_length
    codestreams = [encode_frame(original.PixelData[n * size:(n + 1) * size], description, syntax)[0] for n in range(3)]
    original.PixelData = pydicom.encaps.encapsulate(codestreams, fragments_per_frame=3, has_bot=False)
    original["PixelData"].VR = "OB"
    original.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    original.save_as(out, enforce_file_format=True)
    ds, url = stored(client, out.getvalue())
    media = {"1.2.840.10008.1.2.4.70": "image/jpeg", "1.2.840.10008.1.2.4.80": "image/jls"}.get(syntax, "image/jphc")
    parts = frames_of(client.get(f"{url}/frames/3,1", headers={
        "Accept": f"multipart/related; type={media}; transfer-syntax={syntax}"}))
    for (_, body), codestream in zip(parts, [codestreams[2], codestreams[0]]):
        assert body[:len(codestream)] == codestream and len(body) - len(codestream) in (0, 1)   # and its pad byte
    parts = frames_of(client.get(f"{url}/frames/2", headers={"Accept": OHIF_ACCEPT.replace("=*", "=1.2.840.10008.1.2.1")}))
    assert parts[0][1] == read(out.getvalue()).pixel_array[1].astype("<u2").tobytes()


def test_one_bit_frames_that_begin_inside_a_byte_are_framed_and_rendered(client):
    """A segmentation-like 1-bit instance of 5×7 frames (35 bits: every frame after the first
    begins inside a byte): each frame is sent as its own bits from a byte's first, and renders."""
    rng = np.random.default_rng(7)
    masks = rng.integers(0, 2, size=(4, 5, 7), dtype=np.uint8)
    data = ct_instance(generate_uid(), generate_uid(), rows=5, columns=7, frames=4)
    ds = read(data)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    del ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth
    ds.PixelData = np.packbits(masks.ravel(), bitorder="little").tobytes()
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    _, url = stored(client, out.getvalue())
    parts = frames_of(client.get(f"{url}/frames/2,4", headers={"Accept": "multipart/related; type=application/octet-stream"}))
    for (_, body), number in zip(parts, (2, 4)):
        assert body == np.packbits(masks[number - 1].ravel(), bitorder="little").tobytes()
    rendered = client.get(f"{url}/frames/3/rendered", headers={"Accept": "image/png"})
    from PIL import Image
    image = np.asarray(Image.open(io.BytesIO(rendered.data)))
    assert np.array_equal(image > 127, masks[2].astype(bool))
