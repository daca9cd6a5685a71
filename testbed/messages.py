"""Building requests and reading answers, for tests and benchmarks."""
from __future__ import annotations

import email
import email.policy
import io
import warnings

import pydicom


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
    """Parts of a multipart answer (headers with lower-case names, and bytes), read by the
    standard library's MIME parser: not by the decoder under test."""
    # compat32 hands header values back as sent; the newer policies re-render them.
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body,
                                       policy=email.policy.compat32)
    if not message.is_multipart():
        raise ValueError(f"not a multipart answer: {content_type}")
    return [({name.lower(): value for name, value in part.items()}, part.get_payload(decode=True) or b"")
            for part in message.get_payload()]


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
