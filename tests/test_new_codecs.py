"""HTJ2K and JPEG XL, produced and read: what we write is read by the codecs' own reference
decoders (OpenJPH's ojph_expand, libjxl's djxl) and by OpenJPEG, none of which wrote it;
the RPCL form has the structure PS3.5 §10.18 asks; JPEG XL's JPEG recompression gives the
original JPEG back byte for byte; a codestream declaring another size than its instance is
refused before a decoder allocates for it."""
import io
import shutil
import struct
import subprocess
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance, phantom
from tests.conftest import TEST_FILES, in_ci
from tests.test_codecs import image
from transcode import transcode
from transcode.codecs import CodecError, PixelDescription, decode_frame, encode_frame, recode_frame
from transcode.streams import describe_stream

HTJ2K_LOSSLESS, HTJ2K_RPCL, HTJ2K = "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"
JXL_LOSSLESS, JXL_JPEG, JXL = "1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def tool(name):
    if shutil.which(name) is None:
        if in_ci():
            pytest.fail(f"{name} is not installed; make test installs it")
        pytest.skip(f"{name} is not installed (make test installs it)")
    return name


def read(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def main_header(codestream):
    """(marker, payload) of a J2K codestream's main header, to its first tile-part."""
    position, found = 2, []
    while position + 4 <= len(codestream):
        marker, length = struct.unpack(">HH", codestream[position:position + 4])
        found.append((marker, codestream[position + 4:position + 2 + length]))
        if marker == 0xFF90:
            return found
        position += 2 + length
    raise AssertionError("no tile-part")


GREY = [("ct 512 signed 16/12", PixelDescription(512, 512, 1, 16, 12, 1, "MONOCHROME2")),
        ("cr 16/12", PixelDescription(300, 200, 1, 16, 12, 0, "MONOCHROME1")),
        ("8-bit odd", PixelDescription(33, 47, 1, 8, 8, 0, "MONOCHROME2"))]


def pixels_for(description):
    return image(description.rows, description.columns, description.samples_per_pixel, description.bits_allocated,
                 description.bits_stored, bool(description.pixel_representation))


@pytest.mark.parametrize("name,description", GREY + [("rgb", PixelDescription(48, 64, 3, 8, 8, 0, "RGB"))])
@pytest.mark.parametrize("target", [HTJ2K_LOSSLESS, HTJ2K_RPCL])
def test_ojph_expand_and_openjpeg_read_our_htj2k_exactly(tmp_path, name, description, target):
    original = pixels_for(description)
    codestream, photometric = encode_frame(original.tobytes(), description, target)
    assert photometric == description.photometric_interpretation
    # OpenJPEG, through pydicom's plug-in: another implementation of Part 15's decoder
    from pydicom.pixels import get_decoder
    from pydicom.encaps import encapsulate
    array, _ = get_decoder(target).as_array(
        encapsulate([codestream]), rows=description.rows, columns=description.columns,
        samples_per_pixel=description.samples_per_pixel, bits_allocated=description.bits_allocated,
        bits_stored=description.bits_stored, pixel_representation=description.pixel_representation,
        photometric_interpretation=photometric, planar_configuration=0, number_of_frames=1,
        decoding_plugin="pylibjpeg")
    assert np.array_equal(array, original)
    # OpenJPH's own command-line decoder
    (tmp_path / "in.j2c").write_bytes(codestream)
    out = tmp_path / ("out.ppm" if description.samples_per_pixel == 3 else "out.pgm")
    run = subprocess.run([tool("ojph_expand"), "-i", str(tmp_path / "in.j2c"), "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    if description.pixel_representation:   # PGM holds unsigned samples: ojph_expand says so and stops
        assert run.returncode != 0 or out.exists()
        return
    assert run.returncode == 0, run.stderr
    assert np.array_equal(netpbm(out.read_bytes()), original)


def netpbm(data):
    """A binary PGM/PPM file's samples (big endian beyond 8 bits)."""
    fields, position = [], 2
    while len(fields) < 3:
        while data[position:position + 1].isspace():
            position += 1
        end = position
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(int(data[position:end]))
        position = end
    columns, rows, maximum = fields
    samples = 3 if data[:2] == b"P6" else 1
    dtype = ">u2" if maximum > 255 else "u1"
    array = np.frombuffer(data[position + 1:], dtype, rows * columns * samples)
    return array.reshape((rows, columns, samples) if samples == 3 else (rows, columns))


def test_the_rpcl_form_has_the_structure_ps35_asks():
    """RPCL progression, a TLM marker, and a lowest resolution of at most 64 pixels a side, even
    for a 4096-pixel-wide image, which the five levels of the default would leave at 128."""
    for rows, columns in ((512, 512), (64, 4096)):
        description = PixelDescription(rows, columns, 1, 16, 12, 0, "MONOCHROME2")
        codestream, _ = encode_frame(phantom(rows, columns).tobytes(), description, HTJ2K_RPCL)
        header = dict(main_header(codestream))
        cod = header[0xFF52]
        assert cod[1] == 2   # progression order: RPCL
        levels = cod[5]
        assert -(-max(rows, columns) // (1 << levels)) <= 64
        assert 0xFF55 in header   # TLM
        assert codestream.count(b"\xff\x90") >= levels + 1   # a tile-part per resolution
        assert cod[9] == 1   # reversible wavelet
    plain = dict(main_header(encode_frame(phantom(512, 512).tobytes(), description, HTJ2K_LOSSLESS)[0]))
    assert 0xFF55 not in plain   # only the RPCL form carries TLM


def test_htj2k_is_far_faster_to_decode_than_jpeg_2000_and_lossy_htj2k_is_irreversible():
    description = PixelDescription(512, 512, 1, 16, 12, 0, "MONOCHROME2")
    original = phantom(512, 512)
    lossy, _ = encode_frame(original.tobytes(), description, HTJ2K)
    assert dict(main_header(lossy))[0xFF52][9] == 0   # the 9/7 wavelet
    decoded, _ = decode_frame(lossy, description, HTJ2K)
    error = np.abs(np.frombuffer(decoded, "<u2").astype(float) - original.ravel())
    assert 0 < error.mean() < 0.01 * (int(original.max()) - int(original.min()))
    assert len(lossy) < len(encode_frame(original.tobytes(), description, HTJ2K_LOSSLESS)[0]) / 2
    assert describe_stream("image/jphc", lossy).transfer_syntax == HTJ2K


@pytest.mark.parametrize("name,description", [d for d in GREY if not d[1].pixel_representation]
                         + [("rgb", PixelDescription(48, 64, 3, 8, 8, 0, "RGB"))])
def test_djxl_reads_our_jpeg_xl_exactly(tmp_path, name, description):
    original = pixels_for(description)
    codestream, _ = encode_frame(original.tobytes(), description, JXL_LOSSLESS)
    assert describe_stream("image/jxl", codestream)
    (tmp_path / "in.jxl").write_bytes(codestream)
    out = tmp_path / ("out.ppm" if description.samples_per_pixel == 3 else "out.pgm")
    run = subprocess.run([tool("djxl"), str(tmp_path / "in.jxl"), str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    decoded = netpbm(out.read_bytes())
    if description.bits_stored != description.bits_allocated:   # djxl 0.7 scales samples to the PGM's 16 bits
        decoded = np.rint(decoded.astype(float) * ((1 << description.bits_stored) - 1) / 65535)
    assert np.array_equal(decoded, original)


JPEG_FILES = ["SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm", "SC_jpeg_no_color_transform.dcm"]


@pytest.mark.parametrize("name", JPEG_FILES)
def test_jpeg_recompression_gives_the_original_jpeg_back(tmp_path, name):
    """JPEG Baseline → .111 → JPEG Baseline: every frame's bytes as they were, smaller meanwhile;
    djxl reconstructs the same JPEG from our codestream; the pixels of .111 are the JPEG's."""
    path = TEST_FILES / name
    original = pydicom.dcmread(path)
    count = int(original.get("NumberOfFrames", 1) or 1)
    frames = [bytes(f) for f in generate_frames(original.PixelData, number_of_frames=count)]   # pad byte and all
    with open(path, "rb") as fp:
        recompressed = transcode(fp, JXL_JPEG, JPEG_BASELINE)
    ds = read(recompressed)
    assert ds.file_meta.TransferSyntaxUID == JXL_JPEG and ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PhotometricInterpretation == original.PhotometricInterpretation
    assert list(ds.LossyImageCompressionMethod if ds.LossyImageCompressionMethod.__class__ is not str
                else [ds.LossyImageCompressionMethod]) == ["ISO_10918_1"]   # no lossy step added
    coded = list(generate_frames(ds.PixelData, number_of_frames=count))
    assert sum(map(len, coded)) < sum(map(len, frames))
    back = read(transcode(io.BytesIO(recompressed), JPEG_BASELINE, JXL_JPEG))
    restored = [bytes(f) for f in generate_frames(back.PixelData, number_of_frames=count)]
    assert restored == frames
    (tmp_path / "in.jxl").write_bytes(bytes(coded[0]))
    run = subprocess.run([tool("djxl"), str(tmp_path / "in.jxl"), str(tmp_path / "out.jpg")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.jpg").read_bytes() == frames[0]
    description = PixelDescription.from_dataset(original)
    assert decode_frame(bytes(coded[0]), description, JXL_JPEG)[0] == decode_frame(frames[0], description, JPEG_BASELINE)[0]


def test_only_jpeg_baseline_is_recompressed():
    with pytest.raises(CodecError, match="rewritten"):
        recode_frame(b"\xff\xd8\xff\xc3 not baseline", JPEG_BASELINE, JXL_JPEG)
    ds = ct_instance(generate_uid(), generate_uid(), rows=64, columns=64)
    with pytest.raises(CodecError, match=r"JPEG Baseline \(Process 1\) frames only"):
        transcode(io.BytesIO(ds), JXL_JPEG, "1.2.840.10008.1.2.1")
    with open(TEST_FILES / "SC_rgb_jpeg_gdcm.dcm", "rb") as fp:   # lossless JPEG (process 14)
        with pytest.raises(CodecError, match="frames only"):
            transcode(fp, JXL_JPEG, "1.2.840.10008.1.2.4.70")


def test_a_codestream_declaring_another_size_is_refused_before_decoding():
    small = PixelDescription(16, 16, 1, 8, 8, 0, "MONOCHROME2")
    big = PixelDescription(4000, 4000, 1, 8, 8, 0, "MONOCHROME2")
    frame = np.zeros((4000, 4000), np.uint8).tobytes()
    for target in (HTJ2K_LOSSLESS, JXL_LOSSLESS):
        codestream, _ = encode_frame(frame, big, target)
        with pytest.raises(CodecError, match="declares 4000x4000"):
            decode_frame(codestream, small, target)
    with pytest.raises(CodecError, match="could not be decoded"):
        decode_frame(b"\xff\x0a\x00", small, JXL_LOSSLESS)


def test_the_new_syntaxes_are_stored_searched_and_served_as_stored(client):
    """STOW takes an instance in each; its metadata says the syntax; the frames come back as
    stored (image/jphc, image/jxl) and decoded to native pixels."""
    from testbed.messages import multipart_body, split_multipart, stow_headers

    for target in (HTJ2K_LOSSLESS, HTJ2K_RPCL, JXL_LOSSLESS):
        native = ct_instance(generate_uid(), generate_uid(), rows=64, columns=64, frames=2, BitsStored=12,
                             PixelRepresentation=0, seed=5)
        data = transcode(io.BytesIO(native), target, "1.2.840.10008.1.2.1")
        r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
        assert r.status_code == 200, r.data
        ds = read(data)
        url = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        r = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert read(split_multipart(r.data, r.headers["Content-Type"])[0][1]).file_meta.TransferSyntaxUID == target
        media = "image/jphc" if target.endswith((".201", ".202")) else "image/jxl"
        r = client.get(f"{url}/frames/2", headers={"Accept": f"multipart/related; type={media}; transfer-syntax=*"})
        parts = split_multipart(r.data, r.headers["Content-Type"])
        assert parts[0][0]["content-type"] == f"{media}; transfer-syntax={target}"
        r = client.get(f"{url}/frames/2", headers={"Accept": "multipart/related; type=application/octet-stream"})
        parts = split_multipart(r.data, r.headers["Content-Type"])
        assert parts[0][1] == read(native).pixel_array[1].astype("<u2").tobytes()
        rendered = client.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"})
        assert rendered.status_code == 200 and rendered.data[:4] == b"\x89PNG"


def test_qido_reports_the_syntax_an_instance_is_stored_in(client):
    from testbed.messages import multipart_body, stow_headers

    native = ct_instance(generate_uid(), generate_uid(), rows=32, columns=32)
    data = transcode(io.BytesIO(native), JXL_LOSSLESS, "1.2.840.10008.1.2.1")
    assert client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers()).status_code == 200
    ds = read(data)
    found = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/instances?includefield=00083002").get_json()
    assert found[0]["00083002"] == {"vr": "UI", "Value": [JXL_LOSSLESS]}
    matched = client.get(f"/dicom-web/instances?AvailableTransferSyntaxUID={JXL_LOSSLESS}"
                         f"&StudyInstanceUID={ds.StudyInstanceUID}").get_json()
    assert [r["00080018"]["Value"][0] for r in matched] == [ds.SOPInstanceUID]


@pytest.mark.parametrize("source", [HTJ2K_LOSSLESS, HTJ2K_RPCL, JXL_LOSSLESS])
@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
                                    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2", JXL_LOSSLESS, HTJ2K_LOSSLESS])
def test_the_new_syntaxes_transcode_to_every_lossless_one(source, target):
    native = ct_instance(generate_uid(), generate_uid(), rows=40, columns=48, frames=2, seed=9)
    stored = transcode(io.BytesIO(native), source, "1.2.840.10008.1.2.1")
    if source == target:
        return
    converted = transcode(io.BytesIO(stored), target, source)
    back = read(transcode(io.BytesIO(converted), "1.2.840.10008.1.2.1", target))
    assert read(converted).file_meta.TransferSyntaxUID == target
    assert back.PixelData == read(native).PixelData


def test_jpeg_xl_recompressed_frames_decode_to_the_jpegs_pixels_in_every_syntax():
    with open(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm", "rb") as fp:
        recompressed = transcode(fp, JXL_JPEG, JPEG_BASELINE)
    with open(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm", "rb") as fp:
        expected = read(transcode(fp, "1.2.840.10008.1.2.1", JPEG_BASELINE)).PixelData
    assert read(transcode(io.BytesIO(recompressed), "1.2.840.10008.1.2.1", JXL_JPEG)).PixelData == expected
    as_jls = transcode(io.BytesIO(recompressed), "1.2.840.10008.1.2.4.80", JXL_JPEG)
    assert read(transcode(io.BytesIO(as_jls), "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80")).PixelData == expected


def test_jpeg_baseline_frames_are_sent_recompressed_and_give_the_jpeg_back(client):
    """A stored JPEG Baseline frame asked for as image/jxl with .111: rewritten, not decoded;
    libjxl rebuilds the stored JPEG from it byte for byte."""
    from testbed.messages import multipart_body, split_multipart, stow_headers
    import imagecodecs

    data = (TEST_FILES / "examples_ybr_color.dcm").read_bytes()
    assert client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers()).status_code == 200
    ds = read(data)
    url = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r = client.get(f"{url}/frames/7,2", headers={"Accept": f"multipart/related; type=image/jxl; transfer-syntax={JXL_JPEG}"})
    parts = split_multipart(r.data, r.headers["Content-Type"])
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    for (headers, body), number in zip(parts, (7, 2)):
        assert headers["content-type"] == f"image/jxl; transfer-syntax={JXL_JPEG}"
        assert imagecodecs.jpegxl_decode_jpeg(body) == bytes(stored[number - 1])
