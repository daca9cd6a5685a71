"""WADO-RS retrieve of DICOM instances: study, series and instance resources (PS3.18 §10.4)."""
from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, Response, request

from . import rendered_rs, retrieve
from .errors import NotFound
from .media import instance_representations
from .multipart import new_boundary
from .web import accepted, anonymize_seed, archive, base_url, require_uids, transcode_limits, warning

bp = Blueprint("wado_rs", __name__)


@bp.get("/studies/<study>")
@bp.get("/studies/<study>/series/<series>")
@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instances(study: str, series: str | None = None, instance: str | None = None) -> Response:
    require_uids(study=study, series=series, instance=instance)
    if rendered_rs.asks_for_rendered(accepted()):   # multipart/related; type="image/jpeg", as the quick-start asks
        return rendered_rs.render_resource(study, series, instance, None, thumbnail=False)
    representations = instance_representations(accepted())
    found = archive().instances(study, series, instance)
    if not found:
        level = "instance" if instance else "series" if series else "study"
        raise NotFound(f"no such {level} in the archive")
    limits = transcode_limits()
    planned = retrieve.plan(found, representations, instance is not None,
                            lambda some: retrieve.pixel_descriptions(archive(), some), limits)
    seed = anonymize_seed(study, request.args.get("anonymize"))
    if seed is not None:
        planned = replace(planned, parts=[replace(part, seed=seed) for part in planned.parts])
    if len(planned.parts) == 1:
        planned = replace(planned, parts=[retrieve.convert_now(archive(), planned.parts[0], limits)])

    if planned.multipart:
        boundary = new_boundary()
        body, length = retrieve.multipart_body(archive(), planned.parts, base_url(), boundary, limits)
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    else:
        part = planned.parts[0]
        body = retrieve.body_chunks(archive(), part, limits)
        length = retrieve.part_size(part)
        content_type = part.content_type

    response = Response(body, status=206 if planned.skipped else 200, content_type=content_type,
                        direct_passthrough=True)
    if length is not None:
        response.content_length = length
    if planned.skipped:
        response.headers["Warning"] = warning(
            f"{len(planned.skipped)} of {len(found)} instances were left out: "
            "their stored transfer syntax cannot be converted to an acceptable one, or they are "
            "larger than this server converts")
    return response
