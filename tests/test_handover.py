"""Blob spans handed to the socket unread (service.handover), and read where they cannot be."""
import socket

import pytest

from service.handover import Handover
from storage.blobs import DiskStore, FileRegion, body_pieces


@pytest.fixture
def store(tmp_path):
    store = DiskStore(tmp_path / "blobs")
    store.put("a/b/blob", _stream(bytes(range(256)) * 40))
    return store


def _stream(data: bytes):
    import io

    return io.BytesIO(data)


def _app(pieces, length: int | None):
    def app(environ, start_response):
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response("200 OK", headers)
        return pieces
    return app


def _received(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += sock.recv(n - len(data))
    return data


def test_disk_blob_spans_are_regions_and_s3_like_readers_bytes(store):
    [region] = list(body_pieces(store.open("a/b/blob", 10, 100)))
    assert isinstance(region, FileRegion) and (region.offset, len(region)) == (10, 100)

    class Reader:   # a reader without a file (S3): its bytes
        size = 5

        def __init__(self):
            self.left, self.closed = [b"hello"], False

        def read(self, n=-1):
            return self.left.pop() if self.left else b""

        def close(self):
            self.closed = True
    reader = Reader()
    assert list(body_pieces(reader)) == [b"hello"] and reader.closed


def test_regions_go_to_the_socket_when_the_length_is_declared(store):
    data = bytes(range(256)) * 40
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def pieces():   # a region is valid until the next piece is asked for, as an answer's are
            yield b"head-"
            yield from body_pieces(store.open("a/b/blob", 100, 5000))
            yield b"-tail"
        app = Handover(_app(pieces(), 5 + 5000 + 5))
        written = []
        body = app({"REQUEST_METHOD": "GET", "gunicorn.socket": ours}, lambda status, headers, exc=None: None)
        for piece in body:    # as gunicorn does: each piece written before the next is asked for
            written.append(piece)
            ours.sendall(piece)
        body.close()
        assert written == [b"head-", b"-tail"]          # the region went by sendfile, in its place
        assert _received(theirs, 5010) == b"head-" + data[100:5100] + b"-tail"


def test_a_region_first_lets_the_headers_go_first(store):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        app = Handover(_app(body_pieces(store.open("a/b/blob", 0, 10)), 10))
        body = iter(app({"REQUEST_METHOD": "GET", "gunicorn.socket": ours}, lambda *a: None))
        assert next(body) == b""    # gunicorn sends the status line and headers on this write
        assert list(body) == []
        assert _received(theirs, 10) == bytes(range(10))


@pytest.mark.parametrize("environ, length", [
    ({"REQUEST_METHOD": "GET"}, 10),                          # no gunicorn socket (the test client, another server)
    ({"REQUEST_METHOD": "GET", "gunicorn.socket": "sock"}, None),   # chunked: bytes beside it would break the framing
    ({"REQUEST_METHOD": "HEAD", "gunicorn.socket": "sock"}, 10),
])
def test_regions_are_read_where_they_cannot_be_handed_over(store, environ, length):
    class Blocking:
        def gettimeout(self):
            return None

        def sendfile(self, *args):
            raise AssertionError("not to be used")
    if "gunicorn.socket" in environ:
        environ = {**environ, "gunicorn.socket": Blocking()}
    app = Handover(_app(body_pieces(store.open("a/b/blob", 0, 10)), length))
    assert b"".join(app(environ, lambda *a: None)) == bytes(range(10))


def test_a_blob_shorter_than_its_region_breaks_the_answer(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"12345")
    ours, theirs = socket.socketpair()
    with ours, theirs, open(path, "rb") as fh:
        with pytest.raises(OSError, match="ended after 5 of the 10"):
            FileRegion(fh, 0, 10).send(ours)
        with pytest.raises(OSError, match="ended 5 bytes before"):
            list(FileRegion(fh, 0, 10).chunks())
