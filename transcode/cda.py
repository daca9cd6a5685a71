"""An HL7 CDA R2 document (what Encapsulated CDA instances carry, PS3.3 A.?) made readable as
HTML: the header (title, patient, author, date) and each section's title and narrative block
(paragraphs, lists, tables, styled content), sections nested as they are.

The document is the peer's: it is parsed with defusedxml (no entities, no external
references), only the narrative elements below are mapped, each to a fixed HTML element with no
attribute of the document's (no links, styles or scripts get through), every text escaped, and
the walk is iterative, nesting beyond MAX_DEPTH flattened to its text.
"""
from __future__ import annotations

import html
from typing import Iterator
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring

from .report import date, person, time

HL7 = "{urn:hl7-org:v3}"
MAX_DEPTH = 64
# Narrative block elements (CDA R2 §4.3.5) → the HTML element each becomes.
NARRATIVE = {"paragraph": "p", "list": "ul", "item": "li", "table": "table", "thead": "thead", "tbody": "tbody",
             "tfoot": "tfoot", "tr": "tr", "th": "th", "td": "td", "caption": "caption", "content": "span",
             "sub": "sub", "sup": "sup", "br": "br", "footnote": "small", "linkHtml": "span", "colgroup": None,
             "col": None, "renderMultiMedia": None}
_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#111}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em}"
          "table.header td,table.header th{border:none;text-align:left}table.header th{color:#555;font-weight:normal}"
          "section{margin-left:1em}")


class NotCda(Exception):
    """Bytes that are not a CDA document (not XML, or another root)."""


def cda_html(document: bytes, charset: str = "utf-8") -> str:
    try:
        root = fromstring(document)
    except Exception as exc:   # ParseError, and defusedxml's refusals of entities and DTDs
        raise NotCda(f"the document is not well-formed XML: {str(exc)[:120]}") from None
    if root.tag != f"{HL7}ClinicalDocument":
        raise NotCda("the document is not an HL7 CDA ClinicalDocument")
    esc = html.escape
    title = _text(root.find(f"{HL7}title")) or "Clinical document"
    out = [f'<!DOCTYPE html><html><head><meta charset="{esc(charset)}"><title>{esc(title)}</title>'
           f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"]
    header = _header(root)
    if header:
        out.append('<table class="header">')
        out.extend(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in header)
        out.append("</table>")
    body = root.find(f"{HL7}component")
    structured = body.find(f"{HL7}structuredBody") if body is not None else None
    if structured is not None:
        out.extend(_sections(structured))
    elif body is not None and body.find(f"{HL7}nonXMLBody") is not None:
        text = body.find(f"{HL7}nonXMLBody/{HL7}text")
        kind = text.get("mediaType", "unknown") if text is not None else "unknown"
        out.append(f"<p>The document's body is not XML ({esc(kind)}); retrieve the instance to read it.</p>")
    out.append("</body></html>")
    return "".join(out)


def _header(root: Element) -> list[tuple[str, str]]:
    patient = root.find(f"{HL7}recordTarget/{HL7}patientRole")
    author = root.find(f"{HL7}author/{HL7}assignedAuthor/{HL7}assignedPerson/{HL7}name")
    identifier = patient.find(f"{HL7}id") if patient is not None else None
    facts = [
        ("Patient", _name(patient.find(f"{HL7}patient/{HL7}name")) if patient is not None else ""),
        ("Patient ID", identifier.get("extension", "") if identifier is not None else ""),
        ("Birth date", _time(patient.find(f"{HL7}patient/{HL7}birthTime")) if patient is not None else ""),
        ("Sex", (patient.find(f"{HL7}patient/{HL7}administrativeGenderCode").get("code", "")
                 if patient is not None and patient.find(f"{HL7}patient/{HL7}administrativeGenderCode") is not None
                 else "")),
        ("Date", _time(root.find(f"{HL7}effectiveTime"))),
        ("Author", _name(author)),
        ("Custodian", _text(root.find(f"{HL7}custodian/{HL7}assignedCustodian/"
                                      f"{HL7}representedCustodianOrganization/{HL7}name"))),
    ]
    return [(label, value) for label, value in facts if value]


def _name(element: Element | None) -> str:
    if element is None:
        return ""
    parts = {"prefix": [], "given": [], "family": [], "suffix": []}
    for child in element:
        local = child.tag.replace(HL7, "")
        if local in parts:
            parts[local].append((child.text or "").strip())
    if not any(parts.values()):
        return (element.text or "").strip()
    return person("^".join([" ".join(parts["family"]), " ".join(parts["given"][:1]), " ".join(parts["given"][1:]),
                            " ".join(parts["prefix"]), " ".join(parts["suffix"])]))


def _time(element: Element | None) -> str:
    value = element.get("value", "") if element is not None else ""
    return f"{date(value[:8])} {time(value[8:14])}".strip() if value else ""


def _text(element: Element | None) -> str:
    if element is None:
        return ""
    return " ".join("".join(_texts(element)).split())


def _texts(element: Element) -> Iterator[str]:
    """Every text of an element and its descendants, in order, without recursion."""
    stack: list = [element]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
            continue
        if node.text:
            yield node.text
        for child in reversed(list(node)):
            if child.tail:
                stack.append(child.tail)
            stack.append(child)


def _sections(body: Element) -> Iterator[str]:
    """Each section (component/section, nested) as an HTML section with a heading and its
    narrative; iterative, nesting beyond MAX_DEPTH ignored."""
    esc = html.escape
    stack: list = [(component, 1) for component in reversed(body.findall(f"{HL7}component"))]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        component, depth = item
        section = component.find(f"{HL7}section")
        if section is None or depth > MAX_DEPTH:
            continue
        level = min(6, depth + 1)
        yield f"<section><h{level}>{esc(_text(section.find(f'{HL7}title')) or 'Section')}</h{level}>"
        text = section.find(f"{HL7}text")
        if text is not None:
            yield from _narrative(text)
        stack.append("</section>")
        stack.extend((child, depth + 1) for child in reversed(section.findall(f"{HL7}component")))


def _narrative(text: Element) -> Iterator[str]:
    """A narrative block as HTML: mapped elements only, no attribute kept, text escaped."""
    esc = html.escape
    if text.text:
        yield esc(text.text)
    stack: list = [(child, 1) for child in reversed(list(text))]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        node, depth = item
        local = node.tag.replace(HL7, "") if isinstance(node.tag, str) else ""
        tag = NARRATIVE.get(local, "span")
        if local in ("colgroup", "col", "renderMultiMedia") or depth > MAX_DEPTH:
            if depth > MAX_DEPTH:
                yield esc("".join(_texts(node)))
            if node.tail:
                yield esc(node.tail)
            continue
        if tag == "br":
            yield "<br>" + (esc(node.tail) if node.tail else "")
            continue
        yield f"<{tag}>" + (esc(node.text) if node.text else "")
        stack.append(f"</{tag}>" + (esc(node.tail) if node.tail else ""))
        stack.extend((child, depth + 1) for child in reversed(list(node)))
