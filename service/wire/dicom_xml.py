"""The Native DICOM Model (PS3.19 Annex A) as XML, from a DICOM JSON object (PS3.18 Annex F).

One converter for every XML answer: STOW responses, search results and metadata
are all built as DICOM JSON first.
"""
from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

from .dicom_json import MAX_SEQUENCE_DEPTH, MalformedDataset

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def json_to_xml(model: dict[str, Any]) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<NativeDicomModel xmlns="{NAMESPACE}">']
    _write(model, lines)
    lines.append("</NativeDicomModel>")
    return "\n".join(lines).encode("utf-8")


def _write(model: dict[str, Any], lines: list[str]) -> None:
    for tag, element in model.items():
        vr = element.get("vr", "UN")
        attributes = f'tag="{tag}" vr="{vr}"'
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attributes += f' keyword="{keyword}"'
        lines.append(f"<DicomAttribute {attributes}>")
        if "BulkDataURI" in element:
            lines.append(f"<BulkData uri={quoteattr(element['BulkDataURI'])}/>")
        elif "InlineBinary" in element:
            lines.append(f"<InlineBinary>{element['InlineBinary']}</InlineBinary>")
        for number, value in enumerate(element.get("Value", []), 1):
            if vr == "SQ":
                lines.append(f'<Item number="{number}">')
                _write(value, lines)
                lines.append("</Item>")
            elif vr == "PN":
                lines.append(_person_name(number, value))
            else:
                lines.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        lines.append("</DicomAttribute>")


def _person_name(number: int, value: dict[str, str]) -> str:
    groups = []
    for group in _PN_GROUPS:
        text = value.get(group)
        if text:
            parts = zip(_PN_COMPONENTS, text.split("^"))
            groups.append(f"<{group}>" + "".join(f"<{t}>{escape(v)}</{t}>" for t, v in parts if v) + f"</{group}>")
    return f'<PersonName number="{number}">{"".join(groups)}</PersonName>'


_NUMBER_VRS = {"DS", "FL", "FD", "IS", "SL", "SS", "SV", "UL", "US", "UV"}


def xml_to_json(document: bytes) -> dict[str, Any]:
    """A Native DICOM Model document as a DICOM JSON object; MalformedDataset if malformed.

    Parsed with defusedxml: entities, DTDs and external references are refused, never
    resolved (XXE, billion laughs)."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(document)
    except (ParseError, DefusedXmlException) as exc:
        raise MalformedDataset(f"the XML metadata cannot be read: {exc}") from None
    if _local(root.tag) != "NativeDicomModel":
        raise MalformedDataset(f"the XML metadata's root is {_local(root.tag)!r}, not NativeDicomModel")
    return _read(root, 0)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _read(parent, depth: int) -> dict[str, Any]:
    if depth > MAX_SEQUENCE_DEPTH:
        raise MalformedDataset(f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep")
    model: dict[str, Any] = {}
    for attribute in parent:
        if _local(attribute.tag) != "DicomAttribute":
            continue
        tag, vr = (attribute.get("tag") or "").upper(), attribute.get("vr") or "UN"
        if len(tag) != 8 or any(c not in "0123456789ABCDEF" for c in tag):
            raise MalformedDataset(f"DicomAttribute tag {tag!r} is not 8 hexadecimal digits")
        element: dict[str, Any] = {"vr": vr}
        values: list[Any] = []
        for child in attribute:
            kind = _local(child.tag)
            if kind == "BulkData":
                element["BulkDataURI"] = child.get("uri") or child.get("uuid") or ""
            elif kind == "InlineBinary":
                element["InlineBinary"] = (child.text or "").strip()
            elif kind == "Item":
                values.append(_read(child, depth + 1))
            elif kind == "PersonName":
                values.append(_read_person_name(child))
            elif kind == "Value":
                text = child.text or ""
                values.append(_number(text, vr) if vr in _NUMBER_VRS else text)
        if values:
            element["Value"] = values
        model[tag] = element
    return model


def _number(text: str, vr: str) -> int | float:
    try:
        return int(text) if vr in ("IS", "SL", "SS", "SV", "UL", "US", "UV") else float(text)
    except ValueError:   # int() or float() of the peer's text, alone in the try
        raise MalformedDataset(f"{text[:40]!r} is not a number for VR {vr}") from None


def _read_person_name(element) -> dict[str, str]:
    name = {}
    for group in element:
        kind = _local(group.tag)
        if kind in _PN_GROUPS:
            parts = {_local(c.tag): (c.text or "") for c in group}
            components = [parts.get(c, "") for c in _PN_COMPONENTS]
            while components and not components[-1]:
                components.pop()
            name[kind] = "^".join(components)
    return name
