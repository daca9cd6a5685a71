"""WADO-RS retrieve of DICOM instances: study, series and instance resources (PS3.18 §10.4)."""
from __future__ import annotations

from dataclasses import replace

import logging

import requests
from flask import Response, request

from storage.dataset import reason

from ..access import instances
from ..facade import upstreams
from ..wire import urls
from ..errors import NotAcceptable, NotFound
from ..wire.media import DICOM, instance_representations
from ..wire.multipart import MultipartError, Part, new_boundary
from ..web import (
    accepted, anonymize_seed, archive, base_url, facade, multipart_response, require_uids, settings, transcode_limits, warning,
)


log = logging.getLogger(__name__)


def retrieve_instances(study: str, series: str | None = None, instance: str | None = None) -> Response:
    require_uids(study=study, series=series, instance=instance)
    seed = anonymize_seed(study, request.args.get("anonymize"))
    representations = instance_representations(accepted())
    found = archive().instances(study, series, instance)
    if not found:
        facade = _from_upstream(study, series, instance, representations, seed)
        if facade is not None:
            return facade
        level = "instance" if instance else "series" if series else "study"
        raise NotFound(f"no such {level} in the archive")
    limits = transcode_limits()
    planned = instances.plan(found, representations, instance is not None,
                            lambda some: instances.pixel_descriptions(archive(), some), limits)
    if seed is not None:
        planned = instances.anonymized(archive(), planned, seed, limits)
    if len(planned.parts) == 1:
        planned = replace(planned, parts=[instances.convert_now(archive(), planned.parts[0], limits)])

    if planned.multipart:
        boundary = new_boundary()
        body, length = instances.multipart_body(archive(), planned.parts, base_url(), boundary, limits)
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    else:
        part = planned.parts[0]
        body = instances.body_chunks(archive(), part, limits)
        length = instances.part_size(part)
        content_type = part.content_type

    response = Response(body, status=206 if planned.skipped else 200, content_type=content_type,
                        direct_passthrough=True)
    if length is not None:
        response.content_length = length
    if planned.skipped:
        response.headers["Warning"] = warning(planned.warning(len(found)))
    return response


def _from_upstream(study: str, series: str | None, instance: str | None, representations,
                   seed: str | None) -> Response | None:
    """A study, series or instance not held here, streamed from the first upstream that has it,
    each instance negotiated, converted and (with ``seed``) de-identified here as if it were
    stored (service.facade.upstreams). Where the upstream lists the instances, each is checked before
    the answer starts and fetched on its own, so that those it cannot give make a 206 with a
    Warning. An instance the profile cannot make safe is left out, as one of no acceptable form is."""
    usable = [r for r in representations if r.multipart]
    listing = facade().listed(study, series, instance)
    if listing is not None:
        upstream, paths, missing = listing
        answers = _fetched(upstream, paths)
        status = 206 if missing else 200
        warned = warning(f"{missing} of {missing + len(paths)} instances could not be fetched from "
                         f"upstream {upstream.name}") if missing else None
    else:
        found = facade().find(request.path[len(settings().url_prefix):])
        if found is None:
            return None
        upstream, answer = found
        answers, status, warned = iter([answer]), answer.status_code, answer.headers.get("Warning")
    request.environ[upstreams.UPSTREAM_ENVIRON_KEY] = upstream.name
    if not usable:
        raise NotAcceptable('instances from an upstream are sent as multipart/related; type="application/dicom"')
    candidates = [r.transfer_syntax for r in usable]
    root, config, local, limit = base_url(), settings(), archive(), transcode_limits().max_bytes

    def parts():
        for answer in answers:
            try:
                for spool in upstreams.parts(answer, config.spool_dir, config.spool_memory_bytes, limit):
                    if upstream.keep:
                        local.keep_copy(spool, upstream.name, upstream.cache_bytes)
                    part = _relayed(spool, candidates, seed, root, limit)
                    if part is not None:
                        yield part
            except (upstreams.UpstreamError, MultipartError, requests.RequestException) as exc:   # a broken upstream answer ends early
                log.warning("upstream %s: answer cut short: %s", upstream.name, reason(exc))

    response = multipart_response(parts(), DICOM, status=status)
    if warned:
        response.headers["Warning"] = warned
    return response


def _fetched(upstream, paths: list[str]):
    """The upstream's answer for each path, one at a time; one that fails is left out (and logged)."""
    for path in paths:
        try:
            yield upstream.get(path, accept=upstreams.ANY_DICOM, stream=True)
        except requests.RequestException as exc:
            log.warning("upstream %s: %s failed: %s", upstream.name, path, type(exc).__name__)


def _relayed(spool, candidates: list[str], seed: str | None, root: str, limit: int) -> Part | None:
    """One instance from an upstream in the first acceptable syntax, de-identified with ``seed``;
    None when it has no acceptable form, cannot be read, or cannot be made safe: the answer has
    started, so it is left out (and logged; the audit line shows the bytes sent)."""
    try:
        converted = instances.received_copy(spool, candidates, seed, limit)
        if converted is None:
            return None
        data, target, ds = converted
        headers = {"Content-Type": f"application/dicom; transfer-syntax={target}"}
        if seed is None:
            headers["Content-Location"] = urls.retrieve_url(root, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                                            str(ds.SOPInstanceUID))
        return Part(headers, [data])
    except Exception as exc:   # whatever an upstream's damaged instance raises costs that instance only
        log.warning("an instance from an upstream was left out: %s", reason(exc))
        return None


