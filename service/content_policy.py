"""What a browser may do with an answer: no byte a peer chose runs as active content on our
origin, where the viewer's session lives (docs/security.md, "The origin rule").

Every answer carries ``X-Content-Type-Options: nosniff``, and every answer but our own pages
(which set their own policy) a Content-Security-Policy that sandboxes it (no script, an opaque
origin, no plug-in) and loads nothing, with what each kind truly needs: a video its own media,
on its own origin (a sandboxed document's opaque origin makes that a cross-origin load); a
page of ours that makes a report or a CDA document readable, its inline style. A peer-named
media type (an encapsulated document's MIME Type, an upstream's Content-Type) is sent as
itself only when it is on the passive list (``wire.media.passive``); any other is sent as
``application/octet-stream`` with ``Content-Disposition: attachment``: saved, never shown.
"""
from __future__ import annotations

import re

from flask import Flask, Response, request

from .wire.media import OCTET_STREAM, passive

ANSWER_POLICY = "sandbox; default-src 'none'; frame-ancestors 'self'"
VIDEO_POLICY = "sandbox allow-same-origin; default-src 'none'; media-src 'self'; frame-ancestors 'self'"
READABLE_PAGE_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
OWN_PAGES = frozenset({"viewer"})   # blueprints whose pages set their own policy (service.viewer)

_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def install(app: Flask) -> None:
    @app.after_request
    def protect(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.blueprint not in OWN_PAGES and "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = (
                VIDEO_POLICY if response.mimetype.startswith("video/") else ANSWER_POLICY)
        return response


def as_sent(media_type: str, name: str) -> tuple[str, dict[str, str]]:
    """The Content-Type a peer-named ``media_type`` is sent with, and the headers that go with
    it: itself when passive; else application/octet-stream, as an attachment named ``name``."""
    if passive(media_type):
        return media_type, {}
    return OCTET_STREAM, {"Content-Disposition": f'attachment; filename="{_FILENAME.sub("_", name)[:100]}"'}
