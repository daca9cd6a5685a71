import io
import warnings

import numpy as np
import pydicom
import pytest

from tests.conftest import TEST_FILES
from transcode import PixelDescription, can_transcode, transcode
from transcode.syntaxes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
)

UNCOMPRESSED_FILES = ["MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm", "image_dfl.dcm",
                      "rtdose_expb.dcm", "rtdose_expb_1frame.dcm", "SC_rgb_small_odd_big_endian.dcm",
                      "ExplVR_BigEnd.dcm", "liver_expb_1frame.dcm", "rtplan.dcm", "CT_small.dcm"]


def read(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


@pytest.mark.parametrize("name", UNCOMPRESSED_FILES)
@pytest.mark.parametrize("target", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
def test_uncompressed_conversion_keeps_every_value(name, target):
    original = read(TEST_FILES / name)
    with open(TEST_FILES / name, "rb") as fp:
        converted = read(transcode(fp, target, str(original.file_meta.TransferSyntaxUID)))
    assert converted.file_meta.TransferSyntaxUID == target
    assert converted.is_little_endian and converted.is_implicit_VR == (target == IMPLICIT_VR_LITTLE_ENDIAN)
    for elem in original:
        if elem.tag.element == 0:
            continue  # group lengths are retired (PS3.5 §7.2) and pydicom drops them
        if elem.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
            assert converted[elem.tag].value == elem.value, elem.keyword
    if "PixelData" in original:
        assert np.array_equal(converted.pixel_array, original.pixel_array)


def test_possible_conversions():
    mono16 = PixelDescription(64, 64, 1, 16, 12, 0, "MONOCHROME2")
    assert can_transcode(EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
    assert can_transcode(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    assert can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)
    assert can_transcode("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.50")
    assert can_transcode("1.2.840.10008.1.2.4.50", EXPLICIT_VR_LITTLE_ENDIAN)        # decompression
    assert can_transcode("1.2.840.10008.1.2.5", IMPLICIT_VR_LITTLE_ENDIAN)
    assert not can_transcode("1.2.840.10008.1.2.4.100", EXPLICIT_VR_LITTLE_ENDIAN)   # video
    assert can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.80", mono16)
    assert can_transcode("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.51", mono16)   # 12 bits stored
    assert not can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.50", mono16)   # not 8-bit
    assert not can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.80", None)     # no image
    assert can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.201", mono16)
    assert can_transcode("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.111", mono16)       # rewritten
    assert not can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.111", mono16)  # from pixels


DECODABLE = ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm",
             "examples_ybr_color.dcm", "rtdose_rle.dcm", "JPEGLSNearLossless_16.dcm"]


@pytest.mark.parametrize("name", DECODABLE)
@pytest.mark.parametrize("target", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
def test_decompression_keeps_pixels_and_attributes(name, target):
    original = read(TEST_FILES / name)
    source = str(original.file_meta.TransferSyntaxUID)
    with open(TEST_FILES / name, "rb") as fp:
        converted = read(transcode(fp, target, source))
    assert converted.file_meta.TransferSyntaxUID == target
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    for elem in original:
        # Implicit VR does not record private attributes' VRs: they come back as raw bytes.
        private = elem.tag.is_private and target == IMPLICIT_VR_LITTLE_ENDIAN
        if elem.tag.group not in (0x0028, 0x7FE0) and elem.VR not in ("SQ", "OB", "OW", "UN") and not private:
            assert converted[elem.tag].value == elem.value, elem.keyword


def test_undecodable_data_is_a_conversion_error():
    from transcode.codecs import ConversionError

    with open(TEST_FILES / "JPEG2000-embedded-sequence-delimiter.dcm", "rb") as fp, pytest.raises(ConversionError):
        transcode(fp, EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.91")


def test_a_value_too_long_for_its_explicit_vr_becomes_un():
    """PS3.5 §6.2.2: from Implicit VR, a value over 64 KiB of a VR with a 16-bit length goes out as UN."""
    from pydicom.uid import generate_uid

    from testbed.synthetic import ct_instance

    ds = read(ct_instance(generate_uid(), generate_uid(), rows=8, columns=8, transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN))
    ds.add_new(0x00204000, "LT", "x" * 70000)
    implicit = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(implicit, implicit_vr=True, little_endian=True, enforce_file_format=True)
    back = read(transcode(io.BytesIO(implicit.getvalue()), EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN))
    assert back[0x00204000].VR == "UN" and len(back[0x00204000].value) == 70000


def test_the_video_syntaxes_are_pydicoms_dictionarys():
    """Each video transfer syntax under its own UID (an HEVC entry once sat on .110, which PS3.5
    gives to JPEG XL Lossless); the fragmentable variants of 2023 are not yet known here."""
    from pydicom._uid_dict import UID_dictionary

    from transcode.syntaxes import TRANSFER_SYNTAXES

    video = {uid for uid, ts in TRANSFER_SYNTAXES.items() if ts.bulk_media_type.startswith("video/")}
    standard = {uid for uid, (name, kind, *_) in UID_dictionary.items()
                if kind == "Transfer Syntax" and name.startswith(("MPEG", "HEVC"))}
    assert video == standard
    assert TRANSFER_SYNTAXES["1.2.840.10008.1.2.4.110"].bulk_media_type == "image/jxl"
