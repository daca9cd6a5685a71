import pytest

from service.wire.media import (
    MalformedMediaType, MediaType, PixelRepresentation, Representation, instance_representations, parse_accept, parse_media_type,
    pixel_representations, response_format,
)
from service.access.frames import Choice, choose
from transcode import PixelDescription

ELE = "1.2.840.10008.1.2.1"


def test_parse_quoted_and_unquoted_parameters():
    media = parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b,c"; transfer-syntax=*')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a;b,c", "transfer-syntax": "*"}


@pytest.mark.parametrize("text", ["", "text", "a/b; =x", "a/b; q=2", "a/b; q=x", "a b/c"])
def test_malformed_media_types(text):
    with pytest.raises(MalformedMediaType):
        parse_media_type(text)


def test_accept_order_by_q_then_position():
    accept = parse_accept("a/x;q=0.5, b/y, c/z;q=0, d/w;q=0.5, e/v;q=1")
    assert [m.type for m in accept] == ["b/y", "e/v", "a/x", "d/w"]


def test_missing_accept_means_anything():
    assert parse_accept(None) == [MediaType("*/*")]
    assert parse_accept("  ") == [MediaType("*/*")]


@pytest.mark.parametrize("header, expected", [
    (None, [Representation(True, ELE)]),
    ("*/*", [Representation(True, ELE)]),
    ('multipart/related; type="application/dicom"', [Representation(True, ELE)]),
    ("multipart/related; type=application/dicom; transfer-syntax=*", [Representation(True, "*")]),
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2',
     [Representation(True, "1.2.840.10008.1.2")]),
    ("application/dicom", [Representation(False, ELE)]),
    ("application/dicom; transfer-syntax=*, multipart/related; type=application/dicom",
     [Representation(False, "*"), Representation(True, ELE)]),
    # OHIF's mixed Accept: only the DICOM range applies to instances
    ("application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*", []),
    ('multipart/related; type="application/dicom"; transfer-syntax=bogus', []),
    ("image/jpeg", []),
])
def test_instance_representations(header, expected):
    assert instance_representations(parse_accept(header)) == expected


def test_response_format():
    offered = ("application/dicom+json", "application/dicom+xml")
    assert response_format(parse_accept(None), offered) == "application/dicom+json"
    assert response_format(parse_accept("application/dicom+xml"), offered) == "application/dicom+xml"
    assert response_format(parse_accept("application/*"), offered) == "application/dicom+json"
    assert response_format(parse_accept("text/html"), offered) is None


OCTET = "application/octet-stream"


@pytest.mark.parametrize("header, expected", [
    (None, [(OCTET, ELE)]),
    ("*/*", [(OCTET, ELE)]),
    ("multipart/related; type=application/octet-stream; transfer-syntax=*", [("*", "*")]),   # OHIF
    ('application/dicom+json, multipart/related; type="application/octet-stream"; transfer-syntax=*',
     [("*", "*")]),
    ('multipart/related; type="image/jls"', [("image/jls", "1.2.840.10008.1.2.4.80")]),
    ("multipart/related; type=image/x-jls", [("image/jls", "1.2.840.10008.1.2.4.80")]),
    ("multipart/related; type=image/x-dicom-rle", [("image/dicom-rle", "1.2.840.10008.1.2.5")]),
    ("image/jpeg", [("image/jpeg", "1.2.840.10008.1.2.4.70")]),
    ('multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.91',
     [("image/jp2", "1.2.840.10008.1.2.4.91")]),
    ("multipart/related; type=image/jpx", [("image/jpx", "1.2.840.10008.1.2.4.92")]),
    ('multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.80', []),   # mismatched pair
    ("multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50",
     [("image/jpeg", "1.2.840.10008.1.2.4.50")]),
    ("image/jls;q=0.5, multipart/related; type=image/jp2", [("image/jp2", "1.2.840.10008.1.2.4.90"),
                                                           ("image/jls", "1.2.840.10008.1.2.4.80")]),
    ("image/*; transfer-syntax=*", [("image/*", "*")]),
    ("text/html, image/png", []),
])
def test_pixel_representations(header, expected):
    assert pixel_representations(parse_accept(header)) == [PixelRepresentation(m, t) for m, t in expected]


CT = PixelDescription(512, 512, 1, 16, 12, 1, "MONOCHROME2")
RGB8 = PixelDescription(64, 64, 3, 8, 8, 0, "RGB")


@pytest.mark.parametrize("header, stored, pixels, expected", [
    ("*/*", ELE, CT, (OCTET, ELE)),
    ("*/*", "1.2.840.10008.1.2.4.90", CT, (OCTET, ELE)),                                   # decoded
    ("multipart/related; type=application/octet-stream; transfer-syntax=*", "1.2.840.10008.1.2.4.90", CT,
     ("image/jp2", "1.2.840.10008.1.2.4.90")),                                             # as stored
    ("multipart/related; type=application/octet-stream; transfer-syntax=*", ELE, CT, (OCTET, ELE)),
    ("image/jls", ELE, CT, ("image/jls", "1.2.840.10008.1.2.4.80")),                       # encoded
    ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50, image/jls;q=0.9", ELE, CT,
     ("image/jls", "1.2.840.10008.1.2.4.80")),                                             # 16-bit: not baseline
    ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", ELE, RGB8, ("image/jpeg", "1.2.840.10008.1.2.4.50")),
    ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", ELE, CT, None),
    ("image/*; transfer-syntax=*", ELE, CT, None),                                         # nothing stored compressed
    ("*/*", "1.2.840.10008.1.2.4.100", CT, None),                                          # video: no decoder
])
def test_choose_pixel_representation(header, stored, pixels, expected):
    chosen = choose(pixel_representations(parse_accept(header)), stored, pixels)
    assert chosen == (Choice(*expected) if expected else None)
