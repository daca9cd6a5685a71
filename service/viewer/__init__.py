"""Pages for people: the landing page at ``/``, sign-in and sign-out, and the OHIF viewer at
``/viewer/`` (its build from ``service.viewer.build``, its configuration made per request by
``app_config``). The DICOMweb resources themselves accept the session cookie (``session_person``,
called by authentication) for same-origin requests only."""
from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

from flask import Response, current_app, redirect, request, send_file
from werkzeug.security import safe_join

from ..auth import identify
from ..config import Config, Peer
from ..errors import Forbidden, NotFound, PayloadTooLarge
from ..sessions import COOKIE, LoginFailures, Sessions
from ..web import base_url
from . import pages
from .app_config import app_config
from .build import installed

log = logging.getLogger("dicomweb.viewer")
VIEWER = "/viewer"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_SIGN_IN_BYTES = 8192
_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|wasm|css)$")   # webpack's content-hashed names: never change
_PAGE_HEADERS = {   # pages of ours and the viewer's shell: never framed, never cached, no referrer to other sites
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",   # not no-referrer: with it a form's Origin is "null"
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",   # no window of another site keeps a handle on ours
}
_OWN_PAGES_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"


def _config() -> Config:
    return current_app.config["DICOMWEB"]


def _sessions() -> Sessions:
    return current_app.extensions["sessions"]


def _root() -> str:
    """Where this app is mounted, as the browser sees it ('' at the host's root)."""
    return request.script_root


# -- credentials from the session cookie ------------------------------------------------

def own_origins() -> set[str]:
    """The origins this server is reached at: the request's own, and DICOMWEB_PUBLIC_URL's."""
    origins = {request.host_url.rstrip("/")}
    if _config().public_base_url:
        parts = urlsplit(_config().public_base_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def session_person(peers: tuple[Peer, ...]) -> Peer | None:
    """The signed-in person of a request without an Authorization header, or None.

    The cookie counts for same-origin requests only: a request whose Origin names another
    origin, or that the browser marks as coming from another site, is refused, so it never
    satisfies a cross-origin (CORS) request; a state-changing one (STOW…) must carry an
    Origin naming this server, which a forged cross-site form or script cannot (CSRF)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    origin = request.headers.get("Origin")
    if (origin and origin not in own_origins()) or request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise Forbidden("a viewer session is for requests from this server's own pages; another origin must "
                        "send an API key in the Authorization header")
    person = _sessions().person(cookie, peers)
    if person is not None and request.method not in SAFE_METHODS and not origin:
        raise Forbidden("a state-changing request made with a viewer session must carry an Origin header "
                        "naming this server")
    return person


def _signed_in() -> Peer | None:
    if not _config().auth_enabled:
        return None
    try:
        return session_person(current_app.extensions["peers"].current())
    except Forbidden:
        return None


def _may(person: Peer | None, permission: str) -> bool:
    return not _config().auth_enabled or (person is not None and permission in person.permissions)


# -- the landing page ---------------------------------------------------------------------

def landing() -> Response:
    root = _root()
    person = _signed_in()
    links = {"viewer": f"{root}{VIEWER}/", "api": base_url(),
             "openapi": f"{root}/api", "openapi_json": f"{root}/openapi.json", "health": f"{root}/health",
             "ready": f"{root}/ready", "conformance": f"{root}/conformance"}
    html = pages.landing_page(links, person.name if person else None,
                              f"{root}{VIEWER}/logout" if person else None, _missing_reason())
    return _own_page(html)


def _own_page(html: str, status: int = 200) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers.update(_PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = _OWN_PAGES_CSP
    return response


# -- signing in and out -------------------------------------------------------------------

def _next_url(value: str | None) -> str:
    """Where to go after signing in: a path of the viewer only (never another site)."""
    start = f"{_root()}{VIEWER}/"
    plain = value is not None and all(32 < ord(c) < 127 for c in value)   # no controls (a header), no spaces
    if plain and value.startswith(f"{_root()}{VIEWER}") and not value.startswith("//") and "\\" not in value:
        return value
    return start


def login_form() -> Response:
    if not _config().auth_enabled:
        return redirect(_next_url(request.args.get("next")), 303)
    return _own_page(pages.login_page(f"{_root()}{VIEWER}/login", _next_url(request.args.get("next"))))


def login() -> Response:
    config = _config()
    # Werkzeug reads a url-encoded body whole, whatever its size: the length is checked first.
    if request.content_length is None or request.content_length > MAX_SIGN_IN_BYTES:
        raise PayloadTooLarge(f"a sign-in is a form of at most {MAX_SIGN_IN_BYTES} bytes, sent with its Content-Length")
    next_url = _next_url(request.form.get("next"))
    if not config.auth_enabled:
        return redirect(next_url, 303)
    origin = request.headers.get("Origin")
    if origin and origin not in own_origins():   # login CSRF: nobody signs you in from another site
        raise Forbidden("sign-in is accepted from this server's own sign-in page only")
    address = request.remote_addr or "unknown"
    failures: LoginFailures = current_app.extensions["login_failures"]
    wait = failures.retry_after(address)
    if wait:
        log.warning("sign-in refused: too many failures from %s", address)
        response = _own_page(pages.login_page(request.path, next_url, "Too many failed attempts: wait a minute "
                                              "and try again."), 429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    key = request.form.get("key", "")
    peer = identify(current_app.extensions["peers"].current(), key.strip()) if 0 < len(key) <= 512 else None
    if peer is None or not peer.person:
        failures.failed(address)
        log.warning("sign-in failed from %s: %s", address,
                    "a system's key, not a person's" if peer is not None else "no such key")
        message = ("This key belongs to a system, not a person: ask for a personal key."
                   if peer is not None else "That key is not known here.")
        return _own_page(pages.login_page(request.path, next_url, message), 401)
    cookie = _sessions().open(peer)
    log.info("signed in: %s from %s", peer.name, address)
    response = redirect(next_url, 303)
    response.headers.update(_PAGE_HEADERS)
    response.set_cookie(COOKIE, cookie, max_age=int(config.session_max_seconds), path=f"{_root()}/",
                        secure=_over_https(), httponly=True, samesite="Strict")
    return response


def _over_https() -> bool:
    """The browser reached us over HTTPS (directly, through a trusted proxy that says so, or as
    DICOMWEB_PUBLIC_URL names it): the cookie is then marked Secure."""
    return request.scheme == "https" or (_config().public_base_url or "").startswith("https:")


def logout_form() -> Response:
    person = _signed_in()
    return _own_page(pages.logout_page(f"{_root()}{VIEWER}/logout", person.name if person else None))


def logout() -> Response:
    origin = request.headers.get("Origin")
    if origin and origin not in own_origins():
        raise Forbidden("sign-out is accepted from this server's own pages only")
    cookie = request.cookies.get(COOKIE)
    person = _signed_in()
    _sessions().end(cookie)
    if person is not None:
        log.info("signed out: %s", person.name)
    response = redirect(f"{_root()}{VIEWER}/login", 303)
    response.headers.update(_PAGE_HEADERS)
    response.delete_cookie(COOKIE, path=f"{_root()}/", secure=_over_https(), httponly=True, samesite="Strict")
    return response


# -- the viewer -----------------------------------------------------------------------------

def _build() -> Path | None:
    config = _config()
    if not config.viewer:
        return None
    found = current_app.extensions.get("viewer_build")
    if found is None:   # looked for again until found: `dicomweb viewer install` may run after the start
        found = installed(config.viewer_dir, config.viewer_version)
        current_app.extensions["viewer_build"] = found
    return found


def _missing_reason() -> str | None:
    config = _config()
    if not config.viewer:
        return "The viewer is turned off on this server (DICOMWEB_VIEWER=off)."
    if _build() is None:
        return (f"The viewer (OHIF {config.viewer_version}) is not installed: run `dicomweb viewer install` "
                "(it needs npm: `apt-get install -y npm`), or `make serve`, which does it.")
    return None


def viewer(path: str = "") -> Response:
    """The viewer's files, and its page for every route of its own (a single-page app)."""
    build = _build()
    if build is None:
        return _own_page(pages.missing_viewer_page(_missing_reason() or ""), 404)
    if path == "app-config.js":
        return _app_config()
    if path in ("init-service-worker.js", "sw.js"):   # not an offline app: a cached config would outlive its session
        return _script("// The DICOMweb server does not install OHIF's service worker.\n")
    if path and path != "index.html":
        filename = safe_join(str(build), path)
        if filename is not None and Path(filename).is_file():
            return _static(Path(filename))
        if "." in path.rsplit("/", 1)[-1]:   # a missing file, not a route of the app
            raise NotFound(f"the viewer has no file {path}")
    if _config().auth_enabled and _signed_in() is None:
        return redirect(f"{_root()}{VIEWER}/login?next={_quoted_here()}", 303)
    return _index(build)


def _quoted_here() -> str:
    here = request.full_path if request.query_string else request.path
    return quote(here, safe="")


def _index(build: Path) -> Response:
    base = f"{_root()}{VIEWER}/"
    cached = current_app.extensions.setdefault("viewer_index", {})
    html = cached.get((build, base))
    if html is None:
        html = (build / "index.html").read_text(encoding="utf-8")
        for attribute in ('href="/', 'src="/', 'content="/'):
            html = html.replace(attribute, attribute[:-1] + base)
        html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
        cached[(build, base)] = html
    response = Response(html, mimetype="text/html")
    response.headers.update(_PAGE_HEADERS)
    # Cross-origin isolation: OHIF's volume views use SharedArrayBuffer; everything it loads is ours.
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def _app_config() -> Response:
    config = _config()
    person = _signed_in()
    if config.auth_enabled and person is None:
        return _script("window.location.assign(" + repr(f"{_root()}{VIEWER}/login") + ");\n", 401)
    text = app_config(f"{_root()}{VIEWER}", f"{_root()}{config.url_prefix}", f"{_root()}{VIEWER}/login",
                      _may(person, "store"), _may(person, "delete"))
    return _script(text)


def _script(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-store"
    return response


def _static(path: Path) -> Response:
    compressed = path.with_name(path.name + ".gz")
    gzip_ok = "gzip" in request.headers.get("Accept-Encoding", "") and compressed.is_file()
    response = send_file(compressed if gzip_ok else path, conditional=True, etag=True,
                         mimetype=_mimetype(path), max_age=None)
    if gzip_ok:
        response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    response.headers["Cache-Control"] = ("public, max-age=31536000, immutable" if _HASHED.search(path.name)
                                         else "no-cache")
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"   # a worker's script must say it too
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _mimetype(path: Path) -> str | None:
    if path.suffix == ".wasm":
        return "application/wasm"   # instantiateStreaming needs exactly this
    if path.suffix in (".js", ".mjs"):
        return "text/javascript"
    return mimetypes.guess_type(path.name)[0]


# -- the API description and the conformance statement, for people ------------------------

CONFORMANCE = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def api_page() -> Response:
    from ..openapi import document

    return _own_page(pages.api_page(document(current_app), f"{_root()}/openapi.json"))


def conformance() -> Response:
    if not CONFORMANCE.is_file():
        raise NotFound("the conformance statement is not installed with this copy of the server")
    # As text: browsers show text/plain; text/markdown most of them would download.
    response = send_file(CONFORMANCE, mimetype="text/plain", conditional=True)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
