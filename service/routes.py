"""Where every request goes: each resource once, with the view that answers it, the transaction
it belongs to (the blueprint: metrics, audit and permission labels) and whether it needs a key.
``register`` is how ``create_app`` mounts them; authentication and the OpenAPI document read
``public_endpoints`` from the same table.

    transaction   rule (under DICOMWEB_PREFIX unless the transaction is UNPREFIXED)     view
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import Blueprint, Flask, Response

from . import health, openapi, viewer
from .retrieve import bulkdata_rs, frames_rs, metadata_rs, rendered_rs, wado_rs, wado_uri
from .search import fhir, qido_rs
from .store import commitment_rs, delete_rs, reject_rs, stow_rs
from .worklist import channel, workitems_rs
from .web import accepted, require_uids


@dataclass(frozen=True)
class Route:
    transaction: str
    rule: str
    view: Callable[..., Response]
    method: str = "GET"
    public: bool = False   # answered without a key
    permission: str | None = None   # what the peer needs, when not the method's (service.auth.required_permission)
    websocket: bool = False   # matched by WebSocket upgrades only (werkzeug tells the two apart)

    @property
    def endpoint(self) -> str:
        return f"{self.transaction}.{self.view.__name__}"


def retrieve_instances(study: str, series: str | None = None, instance: str | None = None) -> Response:
    """A retrieve whose Accept asks for rendered images (multipart/related; type="image/jpeg", as
    the quick-start of PS3.18 does) is answered as the rendered resource; any other by WADO-RS."""
    require_uids(study=study, series=series, instance=instance)
    if rendered_rs.asks_for_rendered(accepted()):
        return rendered_rs.render_resource(study, series, instance, None, thumbnail=False)
    return wado_rs.retrieve_instances(study, series, instance)


_STUDY = "/studies/<study>"
_SERIES = _STUDY + "/series/<series>"
_INSTANCE = _SERIES + "/instances/<instance>"
_FRAMES = _INSTANCE + "/frames/<frames>"
_WORKITEM = "/workitems/<workitem>"
_SUBSCRIBER = _WORKITEM + "/subscribers/<subscriber>"

ROUTES: tuple[Route, ...] = (
    Route("stow_rs", "/studies", stow_rs.store, "POST"),
    Route("stow_rs", _STUDY, stow_rs.store, "POST"),

    Route("delete_rs", _STUDY, delete_rs.delete, "DELETE"),
    Route("delete_rs", _SERIES, delete_rs.delete, "DELETE"),
    Route("delete_rs", _INSTANCE, delete_rs.delete, "DELETE"),
    *(Route("reject_rs", resource + "/reject/<code>", reject_rs.reject, "POST", permission="delete")
      for resource in (_STUDY, _SERIES, _INSTANCE)),

    Route("commitment", "/commitment-requests/<transaction>", commitment_rs.request_commitment, "POST"),
    Route("commitment", "/commitment-requests/<transaction>", commitment_rs.check_result),

    Route("qido_rs", "/patients", qido_rs.search_patients),
    Route("qido_rs", "/studies", qido_rs.search_studies),
    Route("qido_rs", "/series", qido_rs.search_series),
    Route("qido_rs", _STUDY + "/series", qido_rs.search_series),
    Route("qido_rs", "/instances", qido_rs.search_instances),
    Route("qido_rs", _STUDY + "/instances", qido_rs.search_instances),
    Route("qido_rs", _SERIES + "/instances", qido_rs.search_instances),

    Route("wado_rs", _STUDY, retrieve_instances),
    Route("wado_rs", _SERIES, retrieve_instances),
    Route("wado_rs", _INSTANCE, retrieve_instances),
    Route("metadata_rs", _STUDY + "/metadata", metadata_rs.retrieve_metadata),
    Route("metadata_rs", _SERIES + "/metadata", metadata_rs.retrieve_metadata),
    Route("metadata_rs", _INSTANCE + "/metadata", metadata_rs.retrieve_metadata),
    Route("frames_rs", _FRAMES, frames_rs.retrieve_frames),
    Route("bulkdata_rs", _INSTANCE + "/bulk/<path:path>", bulkdata_rs.retrieve_bulkdata),
    *(Route("rendered_rs", resource + "/rendered", rendered_rs.rendered) for resource in (_STUDY, _SERIES, _INSTANCE, _FRAMES)),
    *(Route("rendered_rs", resource + "/thumbnail", rendered_rs.thumbnail) for resource in (_STUDY, _SERIES, _INSTANCE, _FRAMES)),
    Route("wado_uri", "/wado", wado_uri.wado),

    # The Worklist (UPS-RS, PS3.18 chapter 11): every resource needs the worklist permission.
    *(Route("ups_rs", rule, view, method, permission="worklist") for rule, view, method in (
        ("/workitems", workitems_rs.create, "POST"),
        ("/workitems", workitems_rs.search, "GET"),
        (_WORKITEM, workitems_rs.retrieve, "GET"),
        (_WORKITEM, workitems_rs.update, "POST"),
        (_WORKITEM + "/state", workitems_rs.change_state, "PUT"),
        (_WORKITEM + "/cancelrequest", workitems_rs.request_cancel, "POST"),
        (_SUBSCRIBER, workitems_rs.subscribe, "POST"),
        (_SUBSCRIBER, workitems_rs.unsubscribe, "DELETE"),
        (_SUBSCRIBER + "/suspend", workitems_rs.suspend, "POST"),
        ("/subscribers/<subscriber>", channel.upgrade_required, "GET"),
    )),
    Route("ups_rs", "/subscribers/<subscriber>", channel.open_channel, permission="worklist", websocket=True),

    Route("fhir", "/fhir/ImagingStudy", fhir.search),
    Route("fhir", "/fhir/ImagingStudy/<study>", fhir.read),

    Route("health", "/health", health.health, public=True),
    Route("health", "/ready", health.ready, public=True),
    Route("health", "/metrics", health.prometheus, public=True),   # to DICOMWEB_METRICS_FROM only (the view checks)
    Route("openapi", "/openapi.json", openapi.openapi_document, public=True),

    # For people: these check the viewer session themselves (a page that needs one sends to sign-in).
    Route("viewer", "/", viewer.landing, public=True),
    Route("viewer", "/api", viewer.api_page, public=True),
    Route("viewer", "/conformance", viewer.conformance, public=True),
    Route("viewer", "/viewer/login", viewer.login_form, public=True),
    Route("viewer", "/viewer/login", viewer.login, "POST", public=True),
    Route("viewer", "/viewer/logout", viewer.logout_form, public=True),
    Route("viewer", "/viewer/logout", viewer.logout, "POST", public=True),
    Route("viewer", "/viewer/", viewer.viewer, public=True),
    Route("viewer", "/viewer/<path:path>", viewer.viewer, public=True),
)

UNPREFIXED = {"health", "openapi", "fhir", "viewer"}
# Older clients know WADO-URI at the server's root too: the same routes, mounted again there.
ALSO_AT_ROOT = {"wado_uri": "wado_uri_root"}


def register(app: Flask, url_prefix: str) -> None:
    """Mount every route, one blueprint per transaction."""
    blueprints: dict[str, Blueprint] = {}
    for route in ROUTES:
        blueprint = blueprints.setdefault(route.transaction, Blueprint(route.transaction, __name__))
        blueprint.add_url_rule(route.rule, route.view.__name__, route.view, methods=[route.method],
                               websocket=route.websocket)
    for name, blueprint in blueprints.items():
        app.register_blueprint(blueprint, url_prefix=None if name in UNPREFIXED else url_prefix)
        if name in ALSO_AT_ROOT and url_prefix:
            app.register_blueprint(blueprint, name=ALSO_AT_ROOT[name])


def public_endpoints() -> frozenset[str]:
    """The endpoints that need no key."""
    return frozenset(route.endpoint for route in ROUTES if route.public)


def endpoint_permissions() -> dict[str, str]:
    """The endpoints that need another permission than their method's."""
    return {route.endpoint: route.permission for route in ROUTES if route.permission}
