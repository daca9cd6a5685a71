"""The Native DICOM Model (PS3.19 Annex A) as XML, from a DICOM JSON object (PS3.18 Annex F).

One converter for every XML answer: STOW responses, search results and metadata
are all built as DICOM JSON first.
"""
from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

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
