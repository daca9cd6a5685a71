"""Building requests and reading answers in tests."""
from __future__ import annotations

import email.parser
import email.policy
import io
import warnings

import pydicom

from service.wire.multipart import MultipartDecoder, PartData, PartEnd, PartStart


def multipart_body(parts: list[bytes], boundary: str = "test-boundary", content_type: str | None = "application/dicom"):
    chunks = []
    for part in parts:
        head = f"--{boundary}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "") + "\r\n"
        chunks.append(head.encode() + part + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def stow_headers(boundary: str = "test-boundary") -> dict[str, str]:
    return {"Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"'}


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart answer, with an independent reading of the boundary."""
    message = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode())
    boundary = message.get_param("boundary")
    decoder = MultipartDecoder(boundary)
    decoder.feed(body)
    decoder.feed(b"")
    parts, headers, data = [], None, bytearray()
    for event in decoder.events():
        if isinstance(event, PartStart):
            headers, data = event.headers, bytearray()
        elif isinstance(event, PartData):
            data += event.data
        elif isinstance(event, PartEnd):
            parts.append((headers, bytes(data)))
    return parts


def read(data: bytes) -> pydicom.Dataset:
    """A Part 10 file's data set, without pydicom's warnings about the odd test files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def slow_upstream(delay: float):
    """A DICOMweb stand-in on a free loopback port that answers every search after ``delay``
    seconds with no results: the late upstream of facade tests and benchmarks. Call
    ``shutdown()`` on it when done."""
    import http.server
    import threading
    import time

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802
            time.sleep(delay)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.end_headers()
                self.wfile.write(b"[]")
            except (BrokenPipeError, ConnectionResetError):
                pass   # the facade gave up waiting, as it should

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
