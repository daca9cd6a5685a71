"""The outermost WSGI layer: blob spans in an answer handed to the client's socket unread.

Retrieve answers carry their blobs as ``storage.blobs.FileRegion`` pieces. Under gunicorn, on
an answer whose length is declared, each region is written by ``os.sendfile``: the kernel
moves the bytes from the page cache to the socket, with no read into Python and no copy in
user space (for a 512 KB frame that copy and its allocation were an eighth of the request's
work, docs/benchmarks.md). gunicorn writes every piece before it asks for the next, so the
bytes reach the socket in order; without a declared length it frames the body in chunks,
which bytes written beside it would break, so there (and under any other server) regions are
read and passed on as bytes. A request a WebSocket took over (the event channel) has its
socket closed by then: gunicorn is told to write nothing.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from storage.blobs import FileRegion

WEBSOCKET_ENVIRON_KEY = "dicomweb.websocket"   # set by service.worklist.channel once a WebSocket took the socket


class Handover:
    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        declared = {"length": False}

        def capture(status: str, headers: list, exc_info=None):  # noqa: ANN001
            declared["length"] = any(name.lower() == "content-length" for name, _ in headers)
            return start_response(status, headers, exc_info)

        body = self.app(environ, capture)
        if environ.get(WEBSOCKET_ENVIRON_KEY):
            # A WebSocket had the socket and closed it: nothing is written; the audit line is.
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
            if "gunicorn.socket" in environ:
                raise StopIteration("the WebSocket closed")   # gunicorn: close the connection, write nothing
            return []
        sock = environ.get("gunicorn.socket") if environ.get("REQUEST_METHOD") != "HEAD" else None
        if sock is not None and sock.gettimeout() is not None:   # os.sendfile wants a blocking socket
            sock = None
        return _Pieces(body, sock, declared)


class _Pieces:
    def __init__(self, body: Iterable, sock, declared: dict) -> None:  # noqa: ANN001
        self.body, self.sock, self.declared = body, sock, declared

    def __iter__(self) -> Iterator[bytes]:
        started = False
        for piece in self.body:
            if not isinstance(piece, FileRegion):
                started = True
                yield piece
            elif self.sock is None or not self.declared["length"]:
                started = True
                yield from piece.chunks()
            else:
                if not started:   # gunicorn sends the status line and headers with the first write
                    started = True
                    yield b""
                piece.send(self.sock)

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
