"""Every readable image in pydicom's test files, through every transfer syntax it admits.

Lossless targets give the same pixels back, lossy ones pixels within a bound and
the instance marked lossy; every other attribute survives; DCMTK, which no one
here wrote, reads what we write.
"""
import io
import subprocess
import warnings

import numpy as np
import pydicom
import pytest

from tests.conftest import pydicom_test_files, require_command
from transcode import PixelDescription, can_transcode, transcode
from transcode.codecs import JPEG_LS_NEAR, ConversionError
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES

TARGETS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
           "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
           "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
           "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
           "1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"]
JPEG_XL_SYNTAXES = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
# Files pydicom reads but cannot write back or decode as described: refused with a reason.
DAMAGED = ("SC_rgb_jpeg.dcm", "J2K_pixelrep_mismatch.dcm", "MR_truncated.dcm")
# Attributes that describe the pixel encoding, and so may change with it.
PIXEL_MODULE = {0x00280004, 0x00280006, 0x00282110, 0x00282112, 0x00282114, 0x7FE00010, 0x7FE00001, 0x7FE00002}


def read(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


def pixels_of(ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _images():
    """(file, stored syntax, description, reference pixels) for every image pydicom can decode."""
    found = []
    for path in pydicom_test_files():
        try:
            ds = read(path)
            source = str(ds.file_meta.TransferSyntaxUID)
            found.append(pytest.param(path, source, id=path.name)) if "PixelData" in ds else None
        except Exception:
            continue
    return found


IMAGES = _images()


def test_the_corpus_is_there():
    assert len(IMAGES) > 50


def native(data: bytes):
    """Our output, and its pixels decoded by pydicom, or by our own path back to native for
    12-bit JPEG and JPEG XL, which pydicom's plug-ins refuse (DCMTK checks the first below,
    libjxl's own djxl the second in test_new_codecs)."""
    ds = read(data)
    syntax = ds.file_meta.TransferSyntaxUID
    if (syntax == "1.2.840.10008.1.2.4.51" and ds.BitsStored > 8) or syntax in JPEG_XL_SYNTAXES:
        return ds, pixels_of(read(transcode(io.BytesIO(data), EXPLICIT_VR_LITTLE_ENDIAN, syntax)))
    return ds, pixels_of(ds)


def same_attributes(original, converted, target):
    for elem in original:
        if elem.tag in PIXEL_MODULE or elem.tag.element == 0 or elem.VR in ("SQ", "OB", "OW", "UN", "OF", "OD"):
            continue
        if elem.tag.is_private and target == IMPLICIT_VR_LITTLE_ENDIAN:
            continue   # Implicit VR does not record private attributes' VRs: they come back as raw bytes
        assert converted[elem.tag].value == elem.value, (elem.keyword or elem.tag)


@pytest.mark.parametrize("path,source", IMAGES)
def test_every_admitted_target(path, source):
    original = read(path)
    try:
        reference = pixels_of(original)
    except Exception:
        pytest.skip("pydicom cannot decode the original, so there is nothing to compare with")
    try:
        description = PixelDescription.from_dataset(original)
    except ConversionError:
        description = None
    done = 0
    for target in TARGETS:
        if target == source or not can_transcode(source, target, description):
            continue
        with open(path, "rb") as fp:
            try:
                data = transcode(fp, target, source)
            except ConversionError as exc:
                if path.name in DAMAGED:
                    continue   # damaged files: refused with a reason, which is all we can do
                raise AssertionError(f"{target}: {exc}") from None
        converted, pixels = native(data)
        assert converted.file_meta.TransferSyntaxUID == target
        assert converted.SOPInstanceUID == original.SOPInstanceUID
        assert pixels.shape == reference.shape, target
        same_attributes(original, converted, target)
        error = np.abs(pixels.astype(np.float64) - reference.astype(np.float64))
        syntax = TRANSFER_SYNTAXES[target]
        if syntax.lossy:
            assert converted.LossyImageCompression == "01"
            methods = converted.LossyImageCompressionMethod
            assert syntax.lossy_method in ([methods] if isinstance(methods, str) else list(methods))
            if target.endswith(".81"):
                assert error.max() <= JPEG_LS_NEAR, target   # near-lossless: a bound per sample
            else:
                span = max(1.0, float(reference.max()) - float(reference.min()))
                assert error.mean() / span < 0.03, f"{target}: mean error {error.mean()} of {span}"
        else:
            assert error.max() == 0, f"{target}: pixels differ by up to {error.max()}"
        done += 1
    assert done or path.name in DAMAGED or description is None or description.bits_allocated not in (8, 16) \
        or "small_odd" in path.name


DCMTK_DECOMPRESSORS = {"1.2.840.10008.1.2.4.50": "dcmdjpeg", "1.2.840.10008.1.2.4.51": "dcmdjpeg",
                       "1.2.840.10008.1.2.4.57": "dcmdjpeg", "1.2.840.10008.1.2.4.70": "dcmdjpeg",
                       "1.2.840.10008.1.2.4.80": "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
                       "1.2.840.10008.1.2.5": "dcmdrle"}


@pytest.fixture(scope="module")
def dcmtk():
    require_command("dcmdump", "dcmtk")


@pytest.mark.parametrize("name", ["CT_small.dcm", "examples_rgb_color.dcm", "SC_rgb_rle_2frame.dcm",
                                  "examples_ybr_color.dcm", "JPGExtended.dcm", "examples_palette.dcm"])
def test_dcmtk_reads_what_we_write(dcmtk, tmp_path, name):
    path = next(p for p in pydicom_test_files() if p.name == name)
    original = read(path)
    source = str(original.file_meta.TransferSyntaxUID)
    reference = pixels_of(read(transcode(open(path, "rb"), EXPLICIT_VR_LITTLE_ENDIAN, source)))
    description = PixelDescription.from_dataset(original)
    checked = 0
    for target in TARGETS:
        if target == source or not can_transcode(source, target, description):
            continue
        written = tmp_path / f"{target}.dcm"
        written.write_bytes(transcode(open(path, "rb"), target, source))
        dump = subprocess.run(["dcmdump", "-E", "-Un", str(written)], capture_output=True, text=True)
        assert dump.returncode == 0 and "E:" not in dump.stderr, f"{target}: {dump.stderr}"
        assert target in dump.stdout
        tool = DCMTK_DECOMPRESSORS.get(target)
        if tool is None:
            continue   # DCMTK's free toolkit has no JPEG 2000 codec; dcmdump reading it is the check
        out = tmp_path / f"{target}.dcmtk.dcm"
        run = subprocess.run([tool, str(written), str(out)], capture_output=True, text=True)
        assert run.returncode == 0, f"{tool} {target}: {run.stderr}"
        decoded = read(out)
        if decoded.PhotometricInterpretation.startswith("YBR"):
            continue   # DCMTK keeps YCbCr; pydicom's reading of our stream was compared above
        error = np.abs(pixels_of(decoded).astype(np.float64) - reference.astype(np.float64))
        if TRANSFER_SYNTAXES[target].lossy:
            assert error.mean() < 0.03 * max(1.0, float(np.ptp(reference))), target
        else:
            assert error.max() == 0, f"{tool} reads other pixels from our {target}"
        checked += 1
    assert checked
