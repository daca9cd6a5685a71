import random

import pytest

from service.wire.multipart import (
    Finished, MultipartDecoder, MultipartError, Part, PartData, PartEnd, PartStart, PartTooLarge, encoded_length,
    encode_parts, spooled_parts,
)


def decode(body: bytes, boundary: str, split_every: int | None = None, rng: random.Random | None = None):
    decoder = MultipartDecoder(boundary)
    parts, current, headers, finished = [], None, None, False
    position = 0
    while position < len(body):
        size = split_every or rng.randint(1, 50)
        decoder.feed(body[position:position + size])
        position += size
        for event in decoder.events():
            if isinstance(event, PartStart):
                current, headers = bytearray(), event.headers
            elif isinstance(event, PartData):
                current += event.data
            elif isinstance(event, PartEnd):
                parts.append((headers, bytes(current)))
            elif isinstance(event, Finished):
                finished = True
    decoder.feed(b"")
    return parts, finished


def body_of(parts, boundary):
    return b"".join(encode_parts([Part(h, [b]) for h, b in parts], boundary))


PAYLOADS = [
    ({"Content-Type": "application/dicom"}, b"DICM" + bytes(range(256)) * 3),
    ({"Content-Type": "application/dicom", "Content-Location": "x"}, b""),
    ({}, b"\r\n--not-the-boundary\r\n--boundar"),  # looks like a delimiter but is not
]


@pytest.mark.parametrize("split", [1, 2, 7, 64, 100000])
def test_round_trip_at_any_split(split):
    body = body_of(PAYLOADS, "boundary")
    parts, finished = decode(body, "boundary", split_every=split)
    assert finished
    assert [b for _, b in parts] == [b for _, b in PAYLOADS]
    assert parts[0][0] == {"content-type": "application/dicom"}


def test_random_splits():
    rng = random.Random(7)
    body = body_of(PAYLOADS * 5, "b0und")
    for _ in range(30):
        parts, _ = decode(body, "b0und", rng=rng)
        assert [b for _, b in parts] == [b for _, b in PAYLOADS * 5]


def test_preamble_epilogue_and_transport_padding():
    body = (b"preamble text\r\n--xyz  \r\nContent-Type: application/dicom\r\n\r\nabc"
            b"\r\n--xyz--\r\nepilogue ignored")
    parts, finished = decode(body, "xyz", split_every=3)
    assert finished and parts == [({"content-type": "application/dicom"}, b"abc")]


def test_folded_header_line():
    body = b"--b\r\nContent-Type: multipart/related;\r\n type=x\r\n\r\nv\r\n--b--"
    parts, _ = decode(body, "b", split_every=5)
    assert parts[0][0]["content-type"] == "multipart/related; type=x"


@pytest.mark.parametrize("body, message", [
    (b"no boundary at all", "no multipart boundary"),
    (b"--b\r\nContent-Type: a\r\n\r\nunterminated", "no closing boundary"),
    (b"--b\r\nbroken header\r\n\r\nx\r\n--b--", "malformed part header"),
    (b"--b\r\nContent-Type: a", "inside part headers"),
    (b"--bogus\r\n\r\nx\r\n--b--", "unexpected characters after a boundary"),
])
def test_malformed(body, message):
    decoder = MultipartDecoder("b")
    with pytest.raises(MultipartError, match=message):
        decoder.feed(body)
        list(decoder.events())
        decoder.feed(b"")


def test_header_block_limit():
    decoder = MultipartDecoder("b", max_header_bytes=100)
    with pytest.raises(MultipartError, match="too large"):
        decoder.feed(b"--b\r\nX-Long: " + b"a" * 200)


def test_body_is_never_buffered_whole():
    decoder = MultipartDecoder("b")
    decoder.feed(b"--b\r\n\r\n")
    list(decoder.events())
    for _ in range(100):
        decoder.feed(b"x" * 100_000)
        assert sum(len(e.data) for e in decoder.events() if isinstance(e, PartData)) > 0
        assert decoder.held < 10


def test_encoder_lengths_match():
    boundary = "bnd"
    parts = [({"Content-Type": "application/dicom", "Content-Location": "http://h/x"}, b"12345"),
             ({"Content-Type": "application/dicom"}, b"")]
    body = body_of(parts, boundary)
    assert len(body) == encoded_length([Part(h, [b], len(b)) for h, b in parts], boundary)
    assert body_of([], boundary) == b"--bnd--\r\n"
    assert len(body_of([], boundary)) == encoded_length([], boundary)
    assert encoded_length([Part({}, [b"x"], 1), Part({}, [b"y"])], boundary) is None   # a size not known


def test_encoder_is_lazy():
    opened = []

    def body(name):
        opened.append(name)
        yield name.encode()

    stream = encode_parts([Part({}, body("a")), Part({}, body("b"))], "q")
    next(stream)
    assert opened == []
    next(stream)
    assert opened == ["a"]


def _chunked(body: bytes, size: int = 7):
    return (body[i:i + size] for i in range(0, len(body), size))


def test_spooled_parts_writes_each_part_to_its_file_with_its_digest():
    import hashlib
    import io

    body = b"".join(encode_parts([Part({"Content-Type": "a/b"}, [b"first"]), Part({"Content-Type": "c/d"}, [b"x" * 100]),
                                  Part({"Content-Type": "a/b"}, [b""])], "BB"))
    files = []

    def file_for(headers):
        if headers["content-type"] == "c/d":
            return None   # refused: yielded without data
        files.append(io.BytesIO())
        return files[-1]

    found = [(p.headers["content-type"], p.file and p.file.read(), p.sha256)
             for p in spooled_parts(_chunked(body), MultipartDecoder("BB"), file_for, digest=True)]
    assert found == [("a/b", b"first", hashlib.sha256(b"first").hexdigest()), ("c/d", None, None),
                     ("a/b", b"", hashlib.sha256(b"").hexdigest())]


def test_spooled_parts_bounds_a_part_and_closes_its_file():
    import io

    body = b"".join(encode_parts([Part({}, [b"y" * 1000])], "BB"))
    made = []
    with pytest.raises(PartTooLarge):
        list(spooled_parts(_chunked(body, 100), MultipartDecoder("BB"), lambda h: made.append(io.BytesIO()) or made[-1],
                           max_part_bytes=500))
    assert made[0].closed


def test_spooled_parts_refuses_a_body_cut_before_its_closing_boundary():
    import io

    body = b"".join(encode_parts([Part({}, [b"data"])], "BB"))
    with pytest.raises(MultipartError, match="closing boundary"):
        list(spooled_parts(_chunked(body[:-10]), MultipartDecoder("BB"), lambda h: io.BytesIO()))
