import pytest

from service.media import (
    MediaType, Representation, instance_representations, parse_accept, parse_media_type, response_format,
)

ELE = "1.2.840.10008.1.2.1"


def test_parse_quoted_and_unquoted_parameters():
    media = parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b,c"; transfer-syntax=*')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a;b,c", "transfer-syntax": "*"}


@pytest.mark.parametrize("text", ["", "text", "a/b; =x", "a/b; q=2", "a/b; q=x", "a b/c"])
def test_malformed_media_types(text):
    with pytest.raises(ValueError):
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
