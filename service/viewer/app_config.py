"""The OHIF app's configuration (its ``app-config.js``), made for this server and for the
person asking — pure: no Flask, no files. OHIF's own defaults are left where they fit; what is
set here is what a same-origin DICOMweb archive needs."""
from __future__ import annotations

import json


def app_config(router_base: str, dicomweb_root: str, login_url: str, can_store: bool, can_delete: bool = False) -> str:
    """The JavaScript that sets ``window.config``. ``router_base`` is the viewer's path
    ("/viewer"), ``dicomweb_root`` the service root as the browser reaches it ("/dicom-web"),
    ``login_url`` where an expired session is sent, ``can_store`` whether uploads are offered,
    ``can_delete`` whether series may be rejected (OHIF's reject calls POST …/reject/113001^DCM)."""
    source = {
        "friendlyName": "this archive",
        "name": "dicomweb",
        "qidoRoot": dicomweb_root,
        "wadoRoot": dicomweb_root,
        "wadoUriRoot": dicomweb_root + "/wado",
        "qidoSupportsIncludeField": True,
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "thumbnail",
        "thumbnailRequestStrategy": "fetch",
        "enableStudyLazyLoad": True,
        "staticWado": False,
        "singlepart": "bulkdata,video,pdf",
        "bulkDataURI": {"enabled": True},
        "omitQuotationForMultipartRequest": True,
        "dicomUploadEnabled": can_store,
        "supportsReject": can_delete,
    }
    config = {
        "routerBasename": router_base,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "dicomweb",
            "configuration": source,
        }],
    }
    # An expired or ended session answers 401: back to the sign-in page, then to where the person was.
    on_error = ("function (error) {\n"
                "  if (error && error.status === 401) {\n"
                f"    window.location.assign({json.dumps(login_url)} + '?next=' +"
                " encodeURIComponent(window.location.pathname + window.location.search));\n"
                "  }\n"
                "}")
    body = json.dumps(config, indent=2).replace("</", "<\\/")
    return ("// Made by the DICOMweb server for this person and this server; not edited by hand.\n"
            f"window.config = {body};\n"
            f"window.config.httpErrorHandler = {on_error};\n")
