"""DELETE of a study, series or instance (as Microsoft's, Google's and dcm4chee's services offer
it; PS3.18 has no delete transaction): 204 once the catalog has committed, when every resource
(search, retrieve, metadata, frames, rendered, thumbnails, WADO-URI, FHIR) stops finding it; the
blobs are removed right after (storage.Archive.delete). Needs the peer's ``delete`` permission."""
from __future__ import annotations

from flask import Response, request

from ..auth import DELETED_ENVIRON_KEY
from ..errors import NotFound
from ..web import archive, require_uids


def delete(study: str, series: str | None = None, instance: str | None = None) -> Response:
    require_uids(study=study, series=series, instance=instance)
    count = archive().delete(study, series, instance)
    request.environ[DELETED_ENVIRON_KEY] = count
    if not count:
        raise no_such(series, instance)
    return Response(status=204)


def no_such(series: str | None, instance: str | None) -> NotFound:
    """The 404 of a lifecycle request whose resource the archive does not hold."""
    return NotFound("the archive holds no such " + ("instance" if instance else "series" if series else "study"))
