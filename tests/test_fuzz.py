"""Every operation of our own OpenAPI document (service.openapi), fuzzed by Schemathesis (a
property-based tester driven by the document): positive and negative requests, with random UIDs
and with those of a stored study, through the app with a key of every permission. None may be
answered 500: a 4xx comes from an error of ours raised on purpose (tests/conftest.py also fails
a test whose request reached the unexpected-error handler).

A fixed seed and DICOMWEB_FUZZ_EXAMPLES examples an operation and way (20 by default, as CI
runs it; more for a long run: ``DICOMWEB_FUZZ_EXAMPLES=500 make test``)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from pydicom.uid import generate_uid
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from service import create_app
from service.config import Peer, hash_key
from testbed.synthetic import ct_instance
from tests.conftest import API_KEY, PEER, make_config

EXAMPLES = int(os.environ.get("DICOMWEB_FUZZ_EXAMPLES", "20"))
AUTH = {"Authorization": f"ApiKey {API_KEY}"}
EVERY_PERMISSION = frozenset({"read", "store", "replace", "delete", "worklist"})


@schemathesis.serializer("application/dicom", 'multipart/related; type="application/dicom"', "multipart/related",
                         "application/dicom+xml", "application/x-www-form-urlencoded")
def _as_sent(context, value) -> bytes:   # noqa: ANN001 - the bytes a peer may send as any of these
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, default=str).encode()


def _operations() -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(make_config(Path(folder))))
        return sorted(result.ok().label for result in schema.get_all_operations())


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """The app, its schema, and the UIDs of a study it holds (a 3-frame CT)."""
    config = make_config(tmp_path_factory.mktemp("fuzz"), peers=(Peer(PEER, hash_key(API_KEY), EVERY_PERMISSION),))
    app = create_app(config)
    study, series = generate_uid(), generate_uid()
    data = ct_instance(study, series, rows=16, columns=16, frames=3)
    client = app.test_client()
    r = client.post("/dicom-web/studies", data=data, content_type="application/dicom", headers=AUTH)
    assert r.status_code == 200
    instance = r.get_json()["00081199"]["Value"][0]["00081155"]["Value"][0]
    held = {"study": study, "series": series, "instance": instance}
    return schemathesis.openapi.from_wsgi("/openapi.json", app), held


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.parametrize("way", ["positive", "negative", "held"])
def test_no_input_reaches_a_500(fuzzed, label, way):
    schema, held = fuzzed
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)
    names = {p.name for p in operation.path_parameters}
    if way == "held" and not names & set(held):
        pytest.skip("no UID in its path: the positive run covers it")
    strategy = operation.as_strategy(
        GenerationMode.NEGATIVE if way == "negative" else GenerationMode.POSITIVE,
        path_parameters={k: v for k, v in held.items() if k in names} if way == "held" else None)

    @seed(29)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(headers=AUTH)
        case.validate_response(response, checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        if way != "negative":
            raise
        pytest.skip("nothing of it can be made invalid")
