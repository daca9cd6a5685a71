"""Retrieve Capabilities (PS3.18 §8.9, Annex H): OPTIONS answers a WADL description made from
the app's own URL map, checked here against the URL map and against WADL's content model."""
import json
import xml.etree.ElementTree as ET

import pytest

from service.capabilities import WADL_NAMESPACE, producible_syntaxes, resource_tree
from transcode.syntaxes import TRANSFER_SYNTAXES

W = f"{{{WADL_NAMESPACE}}}"
# WADL 2009/02 (W3C member submission): what each element may hold, and what it must say.
# The XSD is not at hand offline; its content model is small enough to state here.
CHILDREN = {
    "application": {"doc", "grammars", "resources", "resource_type", "method", "representation", "param"},
    "resources": {"doc", "resource"},
    "resource": {"doc", "param", "method", "resource"},
    "method": {"doc", "request", "response"},
    "request": {"doc", "param", "representation"},
    "response": {"doc", "param", "representation"},
    "representation": {"doc", "param"},
    "param": {"doc", "option", "link"},
    "option": {"doc"},
    "doc": set(),
}
REQUIRED = {"resources": {"base"}, "resource": {"path"}, "method": {"name", "id"}, "param": {"name", "style"},
            "option": {"value"}, "representation": {"mediaType"}}
STYLES = {"plain", "query", "matrix", "header", "template"}


def check_wadl(element, ids):
    name = element.tag.removeprefix(W)
    assert element.tag.startswith(W), element.tag
    assert REQUIRED.get(name, set()) <= set(element.attrib), (name, element.attrib)
    if name == "param":
        assert element.get("style") in STYLES
    if name == "method":
        assert element.get("name") in ("GET", "POST", "PUT", "DELETE") and element.get("id") not in ids
        ids.add(element.get("id"))
    order = {"resource": ["doc", "param", "method|resource"], "request": ["doc", "param", "representation"],
             "response": ["doc", "param", "representation"], "method": ["doc", "request", "response"]}.get(name)
    kinds = [child.tag.removeprefix(W) for child in element]
    assert set(kinds) <= CHILDREN[name], (name, kinds)
    if order:   # children in the order the schema's sequence gives
        rank = {kind: i for i, group in enumerate(order) for kind in group.split("|")}
        assert [rank[k] for k in kinds] == sorted(rank[k] for k in kinds), (name, kinds)
    for child in element:
        check_wadl(child, ids)


def paths_of(element, prefix=""):
    """(full path, methods) of every resource of a WADL tree."""
    found = {}
    for resource in element.findall(f"{W}resource"):
        path = f"{prefix}/{resource.get('path')}"
        found[path] = {m.get("name") for m in resource.findall(f"{W}method")}
        found.update(paths_of(resource, path))
    return found


def test_the_service_root_describes_every_resource_and_method_of_the_url_map(client, app):
    r = client.options("/dicom-web/", headers={"Authorization": ""})
    assert r.status_code == 200 and r.mimetype == "application/vnd.sun.wadl+xml"
    root = ET.fromstring(r.data)
    check_wadl(root, set())
    [resources] = root.findall(f"{W}resources")
    assert resources.get("base") == "http://localhost/dicom-web/"
    described = paths_of(resources)
    expected = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/dicom-web/"):
            path = rule.rule[len("/dicom-web"):].replace("<path:path>", "{path}").replace("<", "{").replace(">", "}")
            expected.setdefault(path, set()).update(rule.methods - {"HEAD", "OPTIONS"})
    assert {p: m for p, m in described.items() if m} == expected
    assert "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered" in described


def test_retrieve_lists_every_transfer_syntax_it_can_produce(client):
    root = ET.fromstring(client.options("/dicom-web").data)
    retrieve = root.find(f".//{W}resource[@path='{{study}}']/{W}method[@name='GET']")
    accept = retrieve.find(f"{W}request/{W}param[@name='Accept']")
    offered = {o.get("value").rsplit("transfer-syntax=", 1)[1] for o in accept.findall(f"{W}option")}
    assert offered == set(producible_syntaxes()) | {"*"}
    assert offered - {"*"} <= set(TRANSFER_SYNTAXES) and "1.2.840.10008.1.2.4.80" in offered


@pytest.mark.parametrize("path, allow", [
    ("/dicom-web/studies", "GET, HEAD, OPTIONS, POST"),
    ("/dicom-web/studies/1.2.3", "DELETE, GET, HEAD, OPTIONS, POST"),
    ("/dicom-web/studies/1.2.3/series/4.5", "DELETE, GET, HEAD, OPTIONS"),
    ("/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1,2", "GET, HEAD, OPTIONS"),
    ("/dicom-web/studies/1.2.3/series/4.5/instances/6.7/bulk/7FE00010", "GET, HEAD, OPTIONS"),
    ("/dicom-web/studies/1.2.3/metadata", "GET, HEAD, OPTIONS"),
    ("/dicom-web/wado", "GET, HEAD, OPTIONS"),
])
def test_a_resource_answers_its_methods_and_its_own_description(client, path, allow):
    r = client.options(path)
    assert r.status_code == 200 and r.headers["Allow"] == allow
    root = ET.fromstring(r.data)
    check_wadl(root, set())
    resources = root.find(f"{W}resources")
    [resource] = resources.findall(f"{W}resource")
    assert resources.get("base") + resource.get("path") == "http://localhost" + path


def test_json_is_offered_and_other_media_types_are_not(client):
    r = client.options("/dicom-web/", headers={"Accept": "application/json"})
    assert r.mimetype == "application/json"
    document = json.loads(r.data)["application"]
    assert document["resources"][0]["base"] == "http://localhost/dicom-web/"
    assert client.options("/dicom-web/", headers={"Accept": "application/xml"}).mimetype == "application/xml"
    assert client.options("/dicom-web/", headers={"Accept": "*/*"}).mimetype == "application/vnd.sun.wadl+xml"
    assert client.options("/dicom-web/", headers={"Accept": "image/png"}).status_code == 406


@pytest.mark.parametrize("accept", ["application/json;q=abc", "application/json;q=nan", "application/json;q=2",
                                    "application/json;=x", "no-slash"])
def test_a_malformed_accept_is_a_400_that_names_it(client, accept):
    """Reached without a key: a 500 before."""
    r = client.options("/dicom-web/", headers={"Accept": accept})
    assert r.status_code == 400 and "Accept" in r.get_json()["message"]


def test_unknown_resources_and_malformed_uids_are_refused(client):
    assert client.options("/dicom-web/nothing").status_code == 404
    assert client.options("/dicom-web/studies/1..2").status_code == 400
    assert client.options("/dicom-web/studies/1.2/series/3/instances/4/frames/0,x").status_code == 400


def test_no_key_is_needed_and_cors_preflights_are_answered_as_before(tmp_path):
    from service import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, cors_origins=("https://viewer.example",)))
    browser = app.test_client()
    assert browser.options("/dicom-web/").status_code == 200
    preflight = browser.options("/dicom-web/studies", headers={"Origin": "https://viewer.example",
                                                               "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example"


def test_the_tree_is_made_from_rules_alone():
    tree = resource_tree([("/x/studies", frozenset({"GET", "POST", "HEAD", "OPTIONS"}), "q"),
                          ("/x/studies/<study>/bulk/<path:path>", frozenset({"GET"}), "b"),
                          ("/elsewhere", frozenset({"GET"}), "e")], "/x")
    assert list(tree.children) == ["studies"] and tree.children["studies"].methods == {"GET": "q", "POST": "q"}
    assert tree.children["studies"].children["{study}"].children["bulk"].children["{path}"].methods == {"GET": "b"}
