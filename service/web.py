"""Small helpers the request handlers share: the archive, URLs, UID checks."""
from __future__ import annotations

import re
from urllib.parse import urlencode

import orjson

from flask import Response, current_app, g, request

from storage import Archive
from storage.uids import InvalidUID, validate_uid

from .auth import PEER_ENVIRON_KEY, STUDY_ENVIRON_KEY
from .config import Config
from .content_policy import as_sent
from .access.deidentify import refusal_of_model, seed
from .errors import BadRequest, NotAcceptable, NotFound, PayloadTooLarge, UnsupportedMediaType
from .limits import TranscodeLimits
from .facade.upstreams import UPSTREAM_ENVIRON_KEY, Facade
from .wire.dicom_xml import json_to_xml, xml_to_json
from .wire.dicom_json import MalformedDataset, check_model
from .wire.media import (
    DICOM_JSON, DICOM_XML, MULTIPART_RELATED, MalformedMediaType, MediaType, parse_accept, parse_media_type,
    response_format,
)
from .wire.multipart import encode_parts, encoded_length, new_boundary, related_type


def settings() -> Config:
    return current_app.config["DICOMWEB"]


def archive() -> Archive:
    return current_app.extensions["archive"]


def facade() -> Facade:
    """The upstreams of this server when it is a facade (falsy when it has none)."""
    return current_app.extensions["facade"]


def transcode_limits() -> TranscodeLimits:
    return current_app.extensions["transcode_limits"]


def anonymize_seed(study_uid: str, value: str | None) -> str | None:
    """The de-identification seed when the request asks for it (``anonymize=true``/``yes``), else None."""
    if value is None or value.lower() in ("false", "no"):
        return None
    if value.lower() not in ("true", "yes", ""):
        raise BadRequest("anonymize must be true or false")
    return seed(current_app.extensions["anonymize_secret"], request.environ.get(PEER_ENVIRON_KEY), study_uid)


def refuse_unless_deidentifiable(model: dict) -> None:
    """406 for an instance (by its stored DICOM JSON) that the profile cannot make safe."""
    reason = refusal_of_model(model)
    if reason is not None:
        raise NotAcceptable(f"the instance cannot be sent anonymised: {reason}")


def base_url() -> str:
    """The public URL of the DICOMweb root, for RetrieveURL and Content-Location."""
    config = settings()
    if config.public_base_url:
        return config.public_base_url.rstrip("/")
    return request.host_url.rstrip("/") + request.script_root + config.url_prefix


def link_root() -> str:
    """The DICOMweb root for links in pages we write: the public URL when configured, else the
    path alone, which the peer's Host header has no part in."""
    config = settings()
    return config.public_base_url.rstrip("/") if config.public_base_url else request.script_root + config.url_prefix


def require_uids(**named: str | None) -> None:
    """400 for any malformed UID from the URL, before it reaches storage."""
    labels = {"study": "Study Instance UID", "series": "Series Instance UID", "instance": "SOP Instance UID"}
    for name, value in named.items():
        if value is None:
            continue
        try:
            validate_uid(value, labels.get(name, name))
        except InvalidUID as exc:
            raise BadRequest(str(exc)) from None
    if named.get("study"):
        request.environ[STUDY_ENVIRON_KEY] = named["study"]


def accepted() -> list[MediaType]:
    """The Accept list; the ``accept`` query parameter overrides the header (PS3.18 §8.3.3.1).
    Parsed once a request, however many steps of it ask."""
    if "dicomweb_accept" not in g:
        g.dicomweb_accept = _accepted()
    return g.dicomweb_accept


def _accepted() -> list[MediaType]:
    values = request.args.getlist("accept")
    header = ", ".join(values) if values else request.headers.get("Accept")
    try:
        return parse_accept(header)
    except MalformedMediaType as exc:
        raise BadRequest(f"malformed Accept: {exc}") from None


def multipart_response(parts, media_type: str, status: int = 200) -> Response:  # noqa: ANN001
    """A streamed ``multipart/related`` answer of ``parts`` (service.wire.multipart.Part) of ``media_type``,
    with its Content-Length when ``parts`` is a list whose sizes are all known (an answer of known
    length is not chunked, and its blob spans can be handed to the socket unread: service.handover)."""
    boundary = new_boundary()
    response = Response(encode_parts(parts, boundary), status=status, direct_passthrough=True,
                        content_type=related_type(media_type, boundary))
    length = encoded_length(parts, boundary) if isinstance(parts, list) else None
    if length is not None:
        response.content_length = length
    return response


def warning(text: str) -> str:
    """A ``Warning: 299`` header value (PS3.18 §8.4.3). Texts may quote damaged input,
    so only printable ASCII is kept and the length is bounded."""
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return f'299 dicomweb "{safe[:300]}"'


def wants_xml(what: str) -> bool:
    """For answers made of DICOM data sets (search results, metadata): True for
    ``multipart/related; type="application/dicom+xml"``, False for DICOM JSON, the
    default; 406 naming ``what`` for anything else."""
    for media in accepted():
        if media.type in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return False
        if media.type in (MULTIPART_RELATED, "multipart/*") and (media.param("type") or "").lower() == DICOM_XML:
            return True
    raise NotAcceptable(f'{what} are sent as application/dicom+json or multipart/related; type="{DICOM_XML}"')


def held_or_relayed(study: str, series: str | None = None, instance: str | None = None, anonymized: bool = False,
                    transform=None) -> tuple[list, Response | None]:  # noqa: ANN001
    """The resource's instances held here and None; or, when none is, no instances and an
    upstream's answer for the request (``from_upstream``); NotFound when neither has it."""
    found = archive().instances(study, series, instance)
    if found:
        return found, None
    return [], relayed_or_missing("instance" if instance else "series" if series else "study", anonymized, transform)


def relayed_or_missing(what: str, anonymized: bool = False, transform=None) -> Response:  # noqa: ANN001
    """An upstream's answer for a resource not held here; NotFound when no upstream has it either."""
    relayed = from_upstream(anonymized, transform)
    if relayed is None:
        raise NotFound(f"no such {what} in the archive")
    return relayed


def from_upstream(anonymized: bool = False, transform=None) -> Response | None:
    """The current request answered by an upstream, for a resource not held here (service.facade.upstreams).
    Relayed bytes are not looked into, so an anonymised answer of them is refused (400), unless
    ``transform`` (DICOM JSON in, DICOM JSON out) de-identifies what is relayed."""
    if anonymized and transform is None and facade():
        raise BadRequest("anonymize: this resource is relayed from an upstream as it comes, so it cannot be "
                         "sent anonymised; retrieve the instances or their metadata with anonymize=true")
    found = facade().relay(request.path[len(settings().url_prefix):], _forwarded_query(),
                           request.headers.get("Accept"), base_url(), transform)
    if found is None:
        return None
    upstream, status, content_type, body = found
    request.environ[UPSTREAM_ENVIRON_KEY] = upstream.name
    sent, headers = as_sent(content_type, "relayed")   # an upstream is a peer: its bytes are not run here
    return Response(body, status=status, content_type=sent, headers=headers, direct_passthrough=True)


def _forwarded_query() -> bytes:
    """The request's query without ``anonymize``: that is done here, not asked of the upstream."""
    if "anonymize" not in request.args:
        return request.query_string
    return urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "anonymize"]).encode()


_FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5], in the order asked; 400 for anything else."""
    if not _FRAME_LIST.fullmatch(text) or len(text) > 10_000:
        raise BadRequest(f"frame list {text[:80]!r} is not a comma-separated list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


def check_range(numbers: list[int], count: int) -> None:
    bad = [n for n in numbers if n > count]
    if bad:
        raise BadRequest(f"frame {bad[0]} is out of range: the instance has {count} frame(s)")


def dataset_payload(what: str, max_bytes: int, optional: bool = False) -> dict | None:
    """The one DICOM data set a request carries as ``application/dicom+json`` (or JSON) or
    ``application/dicom+xml`` (PS3.18 §8.7.3.1): 415 for another type, 413 past ``max_bytes`` or
    without a Content-Length, 400 for what does not parse. With ``optional``, no body is None."""
    if optional and not request.content_length and not request.headers.get("Transfer-Encoding"):
        return None
    header = request.headers.get("Content-Type")
    try:
        kind = parse_media_type(header).type if header else ""
    except MalformedMediaType as exc:
        raise BadRequest(f"Content-Type: {exc}") from None
    if kind not in (DICOM_JSON, DICOM_XML, "application/json"):
        raise UnsupportedMediaType(f"{what} is application/dicom+json or application/dicom+xml")
    if request.content_length is None or request.content_length > max_bytes:
        raise PayloadTooLarge(f"{what} is at most {max_bytes} bytes, sent with its Content-Length")
    data = request.get_data(cache=False)
    try:
        model = xml_to_json(data) if kind == DICOM_XML else orjson.loads(data)
        if isinstance(model, list) and len(model) == 1:   # a DICOM JSON array of one data set
            model = model[0]
        check_model(model)
    except (orjson.JSONDecodeError, MalformedDataset) as exc:
        raise BadRequest(f"{what} is not a DICOM {'XML' if kind == DICOM_XML else 'JSON'} data set: {exc}") from None
    return model


def single_dataset_as_xml(what: str) -> bool:
    """For an answer of one data set: whether Accept asks for XML rather than DICOM JSON (406 for neither)."""
    chosen = response_format(accepted(), (DICOM_JSON, DICOM_XML, "application/json"))
    if chosen is None:
        raise NotAcceptable(f"{what} is sent as application/dicom+json or application/dicom+xml")
    return chosen == DICOM_XML


def dataset_response(model: dict | list, as_xml: bool, status: int = 200) -> Response:
    if as_xml:
        return Response(json_to_xml(model), status=status, mimetype=DICOM_XML)
    return Response(orjson.dumps(model), status=status, mimetype=DICOM_JSON)
