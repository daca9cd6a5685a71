import io
import warnings

import numpy as np
import pydicom
import pytest

from tests.conftest import TEST_FILES
from transcode import can_transcode, transcode
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
        converted = read(transcode(fp, target))
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
    assert can_transcode(EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
    assert can_transcode(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    assert can_transcode("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.50")
    assert not can_transcode("1.2.840.10008.1.2.4.50", EXPLICIT_VR_LITTLE_ENDIAN)
    assert not can_transcode(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)
