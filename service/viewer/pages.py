"""The few pages people see besides the viewer: the landing page, sign-in and sign-out, and
the page saying the viewer is missing — plain HTML, no script, escaped here. Pure."""
from __future__ import annotations

from html import escape

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1b1f24; }
main { max-width: 42rem; margin: 3rem auto; padding: 2rem; background: #fff; border-radius: 8px;
       box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h1 { font-size: 1.5rem; margin-top: 0; }
label { display: block; font-weight: 600; margin-bottom: .25rem; }
input[type=password] { width: 100%; box-sizing: border-box; padding: .5rem; font: inherit;
                       border: 1px solid #8a939c; border-radius: 4px; }
button { margin-top: 1rem; padding: .5rem 1.25rem; font: inherit; border: 0; border-radius: 4px;
         background: #0b5cad; color: #fff; cursor: pointer; }
button:focus, input:focus, a:focus { outline: 3px solid #f2b705; outline-offset: 2px; }
.alert { padding: .75rem; border-radius: 4px; background: #fde8e8; color: #8a1c1c; }
.note { color: #4b5560; font-size: .9rem; }
ul { padding-left: 1.25rem; }
"""


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


def login_page(action: str, next_url: str, message: str | None = None) -> str:
    alert = f'<p class="alert" role="alert" id="problem">{escape(message)}</p>' if message else ""
    described = ' aria-describedby="problem"' if message else ""
    return page("Sign in — DICOMweb archive", f"""
<h1>Sign in to the viewer</h1>
{alert}
<form method="post" action="{escape(action)}">
  <input type="hidden" name="next" value="{escape(next_url)}">
  <label for="key">Your personal key</label>
  <input type="password" id="key" name="key" required autocomplete="current-password" autofocus{described}>
  <button type="submit">Sign in</button>
</form>
<p class="note">The key is the one your administrator made for you with
<code>dicomweb keys add your-name --person</code>. Signing in opens a session in this
browser; a system's API key cannot be used here.</p>""")


def logout_page(action: str, person: str | None) -> str:
    who = f"You are signed in as <strong>{escape(person)}</strong>." if person else "You are not signed in."
    return page("Sign out — DICOMweb archive", f"""
<h1>Sign out</h1>
<p>{who}</p>
<form method="post" action="{escape(action)}"><button type="submit">Sign out</button></form>""")


def landing_page(links: dict[str, str], person: str | None, logout: str | None, viewer_note: str | None) -> str:
    """``links``: viewer, api, openapi, health, conformance → URLs."""
    who = ""
    if person and logout:
        who = (f'<p>Signed in as <strong>{escape(person)}</strong>. '
               f'<form method="post" action="{escape(logout)}" style="display:inline">'
               f'<button type="submit">Sign out</button></form></p>')
    viewer = (f'<li><a href="{escape(links["viewer"])}">Open the viewer</a> — browse, search and read the '
              f"studies kept here (OHIF)</li>") if not viewer_note else f"<li>{escape(viewer_note)}</li>"
    return page("DICOMweb archive", f"""
<h1>DICOMweb archive</h1>
<p>This server keeps medical images and serves them over DICOMweb (DICOM PS3.18):
STOW-RS to store, QIDO-RS to search, WADO-RS and WADO-URI to retrieve, rendered images and
thumbnails for browsers.</p>
{who}
<ul>
  {viewer}
  <li>Service root for programs: <code>{escape(links["api"])}</code> (an API key in the
      <code>Authorization</code> header)</li>
  <li><a href="{escape(links["openapi"])}">The API description</a> (OpenAPI; <a
      href="{escape(links["openapi_json"])}">as JSON</a>)</li>
  <li><a href="{escape(links["health"])}">Health</a> and <a href="{escape(links["ready"])}">readiness</a></li>
  <li><a href="{escape(links["conformance"])}">Conformance statement</a></li>
</ul>""")


def missing_viewer_page(reason: str) -> str:
    return page("Viewer not installed — DICOMweb archive", f"""
<h1>The viewer is not available</h1>
<p>{escape(reason)}</p>
<p>Everything else of this server works as usual; the <a href="../">start page</a> lists it.</p>""")


def api_page(document: dict, json_url: str) -> str:
    """The OpenAPI document as a page: each path, its methods, what they take and answer."""
    sections = []
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            parameters = "".join(
                f"<li><code>{escape(p['name'])}</code> ({escape(p['in'])}){': ' + escape(p['description']) if p.get('description') else ''}</li>"
                for p in operation.get("parameters", []))
            answers = ", ".join(
                f"{escape(code)}" + (f" ({escape(', '.join(spec['content']))})" if spec.get("content") else "")
                for code, spec in operation.get("responses", {}).items())
            key = "" if operation.get("security") == [] else " · needs a key"
            sections.append(f"<section><h2><code>{escape(method.upper())} {escape(path)}</code></h2>"
                            f"<p>{escape(operation.get('summary', ''))}{key}</p>"
                            + (f"<ul>{parameters}</ul>" if parameters else "")
                            + f"<p class=\"note\">Answers: {answers}</p></section>")
    info = document.get("info", {})
    return page("API — DICOMweb archive", f"""
<h1>{escape(info.get("title", "API"))}</h1>
<p>{escape(info.get("description", ""))} The same description as <a href="{escape(json_url)}">OpenAPI JSON</a>.</p>
{''.join(sections)}""")
