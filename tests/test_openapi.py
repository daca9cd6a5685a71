"""The OpenAPI document: valid OpenAPI 3.1, every route of the app in it, served without a key."""
from openapi_spec_validator import validate


def test_the_document_is_valid_and_complete(app):
    r = app.test_client().get("/openapi.json")
    assert r.status_code == 200
    document = r.get_json()
    validate(document)
    routes = {rule.rule.replace("<path:path>", "{path}").replace("<", "{").replace(">", "}")
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert routes == set(document["paths"])
    store = document["paths"]["/dicom-web/studies"]["post"]
    assert 'multipart/related; type="application/dicom"' in store["requestBody"]["content"]
    assert document["paths"]["/health"]["get"]["security"] == []
