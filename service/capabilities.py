"""Retrieve Capabilities (PS3.18 §8.9, Annex H): ``OPTIONS`` on the service root answers a WADL
document describing every resource, method, query parameter and media type the service offers;
``OPTIONS`` on a resource answers ``Allow`` and the description of that resource and its children.

The description is made from what routes the requests: the app's URL map (resources and methods),
the API description's table of parameters and answers (service.openapi.ENDPOINTS) and the
transcoder's table of transfer syntaxes, so it cannot drift from the service. ``describe`` is pure;
``install`` answers the requests, before authentication: like /openapi.json, it needs no key.
"""
from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from flask import Flask, Response, request

from transcode.codecs import ENCODABLE
from transcode.syntaxes import UNCOMPRESSED

from .errors import BadRequest, NotAcceptable, NotFound
from .wire.media import MalformedMediaType, parse_accept

WADL = "application/vnd.sun.wadl+xml"
WADL_NAMESPACE = "http://wadl.dev.java.net/2009/02"
OFFERED = (WADL, "application/xml", "application/json")
RETRIEVE_ENDPOINTS = ("wado_rs.retrieve_instances",)   # their Accept lists each producible transfer syntax


@dataclass
class Resource:
    """One step of a resource path, with its methods (endpoint names by HTTP method) and children."""

    path: str
    methods: dict[str, str] = field(default_factory=dict)
    children: dict[str, "Resource"] = field(default_factory=dict)


def resource_tree(rules: list[tuple[str, frozenset[str], str]], prefix: str) -> Resource:
    """The resources under ``prefix`` from (rule, methods, endpoint) triples of a URL map."""
    root = Resource("")
    for rule, methods, endpoint in rules:
        if not rule.startswith(prefix + "/"):
            continue
        node = root
        for step in _steps(rule[len(prefix) + 1:]):
            node = node.children.setdefault(step, Resource(step))
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            node.methods[method] = endpoint
    return root


def _steps(path: str) -> list[str]:
    steps, current = [], []
    for part in re.sub(r"<(?:[a-z]+:)?([a-z]+)>", r"{\1}", path).split("/"):
        current.append(part)
        if part != "{path}":   # a bulk data path is one template parameter of several steps
            steps.append("/".join(current))
            current = []
    if current:
        steps.append("/".join(current))
    return [s for s in steps if s]


def find(root: Resource, steps: list[str]) -> list[Resource] | None:
    """The resources a concrete path walks through, one a step (its UIDs matching the template
    steps); None when it names no resource."""
    node, walked = root, []
    for step in steps:
        child = node.children.get(step) or next((c for c in node.children.values() if c.path.startswith("{")), None)
        if child is None:
            return None
        walked.append(child)
        node = child
    return walked


def describe(root: Resource, base: str, endpoints: dict[str, dict], syntaxes: list[str]) -> ET.Element:
    """The WADL ``application`` of ``root`` served at ``base``."""
    ET.register_namespace("", WADL_NAMESPACE)
    application = ET.Element(_tag("application"), {"xmlns:xsd": "http://www.w3.org/2001/XMLSchema"})
    ET.SubElement(application, _tag("doc"),
                  title="DICOMweb archive (PS3.18); its behaviour against the standard: docs/conformance.md")
    resources = ET.SubElement(application, _tag("resources"), base=base)
    ids = itertools.count(1)   # method ids are xsd:IDs: unique in the document
    for child in root.children.values():
        _resource(resources, child, endpoints, syntaxes, ids)
    return application


def _tag(name: str) -> str:
    return f"{{{WADL_NAMESPACE}}}{name}"


def _resource(parent: ET.Element, node: Resource, endpoints: dict[str, dict], syntaxes: list[str],
              ids: itertools.count) -> None:
    element = ET.SubElement(parent, _tag("resource"), path=node.path)
    for name in re.findall(r"\{([a-z]+)\}", node.path):
        ET.SubElement(element, _tag("param"), name=name, style="template", type="xsd:string", required="true")
    for method, endpoint in node.methods.items():
        _method(element, method, endpoint, endpoints, syntaxes, f"{endpoint}.{method.lower()}.{next(ids)}")
    for child in node.children.values():
        _resource(element, child, endpoints, syntaxes, ids)


def _method(parent: ET.Element, method: str, endpoint: str, endpoints: dict[str, dict], syntaxes: list[str],
            identifier: str) -> None:
    spec = endpoints.get(endpoint, {})
    element = ET.SubElement(parent, _tag("method"), name=method, id=identifier)
    if spec.get("summary"):
        ET.SubElement(element, _tag("doc"), title=spec["summary"])
    request_element = ET.SubElement(element, _tag("request"))
    for query in spec.get("query", []):
        ET.SubElement(request_element, _tag("param"), name=query["name"], style="query",
                      type=_xsd_type(query.get("schema", {})), required="false")
    if endpoint in RETRIEVE_ENDPOINTS:
        accept = ET.SubElement(request_element, _tag("param"), name="Accept", style="header",
                               default='multipart/related; type="application/dicom"')
        for uid in syntaxes:
            ET.SubElement(accept, _tag("option"),
                          value=f'multipart/related; type="application/dicom"; transfer-syntax={uid}')
        ET.SubElement(accept, _tag("option"), value='multipart/related; type="application/dicom"; transfer-syntax=*')
    for media_type in spec.get("body", []):
        ET.SubElement(request_element, _tag("representation"), mediaType=media_type)
    for status, media_types in spec.get("answers", {}).items():
        response = ET.SubElement(element, _tag("response"), status=status)
        for media_type in media_types:
            ET.SubElement(response, _tag("representation"), mediaType=media_type)


def _xsd_type(schema: dict) -> str:
    return {"integer": "xsd:int", "boolean": "xsd:boolean"}.get(schema.get("type", ""), "xsd:string")


def as_json(element: ET.Element) -> dict:
    """The same description as JSON: each element an object of its attributes and its children by name."""
    out: dict = {name: value for name, value in element.attrib.items() if not name.startswith("xmlns")}
    for child in element:
        out.setdefault(child.tag.split("}", 1)[1], []).append(as_json(child))
    return out


def producible_syntaxes() -> list[str]:
    return sorted(UNCOMPRESSED | ENCODABLE)


# -- the requests ------------------------------------------------------------------------

def install(app: Flask, url_prefix: str) -> None:
    """OPTIONS on the DICOMweb resources answered here; elsewhere (people's pages, /health) as
    Flask does, with Allow alone."""
    @app.before_request
    def capabilities() -> Response | None:
        if request.method != "OPTIONS" or not (request.path == url_prefix or request.path.startswith(url_prefix + "/")):
            return None
        return answer(app, url_prefix)


def answer(app: Flask, url_prefix: str) -> Response:
    from .openapi import ENDPOINTS
    from .web import base_url

    rules = [(r.rule, frozenset(r.methods or ()), r.endpoint) for r in app.url_map.iter_rules()]
    tree = resource_tree(rules, url_prefix)
    steps = _steps_of(request.path[len(url_prefix):])
    walked = find(tree, steps)
    if walked is None:
        raise NotFound(f"{request.path} is no resource of this service")
    _check_uids(steps, walked)
    chosen = _negotiate()
    node = walked[-1] if walked else tree
    if node is tree:
        description = describe(tree, base_url() + "/", ENDPOINTS, producible_syntaxes())
    else:   # the resource asked about, by its own path, under the base of its parent
        own = Resource(steps[-1], node.methods, node.children)
        parent = "/".join(steps[:-1])
        description = describe(Resource("", {}, {own.path: own}), base_url() + "/" + (parent + "/" if parent else ""),
                               ENDPOINTS, producible_syntaxes())
    methods = sorted({*node.methods, "OPTIONS"} | ({"HEAD"} if "GET" in node.methods else set()))
    if chosen == "application/json":
        body = json.dumps({"application": as_json(description)}, indent=1)
    else:
        body = ET.tostring(description, encoding="unicode", xml_declaration=True)
    response = Response(body, mimetype=chosen)
    response.headers["Allow"] = ", ".join(methods)
    return response


def _check_uids(steps: list[str], walked: list[Resource]) -> None:
    """400 for a malformed UID or frame list where the path has one, as every other transaction answers."""
    from .web import parse_frame_list, require_uids

    for step, node in zip(steps, walked):
        if node.path in ("{study}", "{series}", "{instance}"):
            require_uids(**{node.path[1:-1]: step})
        elif node.path == "{frames}":
            parse_frame_list(step)


def _steps_of(path: str) -> list[str]:
    """A concrete path's steps, a bulk data path's steps after ``bulk`` as one (one step of the tree)."""
    steps = [s for s in path.split("/") if s]
    if "bulk" in steps:
        cut = steps.index("bulk") + 1
        return steps[:cut] + (["/".join(steps[cut:])] if steps[cut:] else [])
    return steps


def _negotiate() -> str:
    try:
        accept = parse_accept(request.headers.get("Accept"))
    except MalformedMediaType as exc:
        raise BadRequest(f"malformed Accept: {exc}") from None
    if not accept:
        return WADL
    for media in accept:
        if media.type in OFFERED:
            return media.type
        if media.type in ("*/*", "application/*"):
            return WADL
    raise NotAcceptable(f"the capabilities are offered as {', '.join(OFFERED)}")
