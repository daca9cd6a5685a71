"""The Native DICOM Model (PS3.19 Annex A) as XML, from a pydicom Dataset."""
from __future__ import annotations

import base64
from xml.sax.saxutils import escape, quoteattr

import pydicom
from pydicom.valuerep import PersonName

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def dataset_to_xml(ds: pydicom.Dataset) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<NativeDicomModel xmlns="{NAMESPACE}">']
    _write_dataset(ds, lines)
    lines.append("</NativeDicomModel>")
    return "\n".join(lines).encode("utf-8")


def _write_dataset(ds: pydicom.Dataset, lines: list[str]) -> None:
    for elem in ds:
        attrs = f'tag="{elem.tag:08X}" vr="{elem.VR}"'
        if elem.keyword:
            attrs += f' keyword="{elem.keyword}"'
        if elem.tag.is_private and elem.private_creator:
            attrs += f" privateCreator={quoteattr(elem.private_creator)}"
        lines.append(f"<DicomAttribute {attrs}>")
        if elem.VR == "SQ":
            for number, item in enumerate(elem.value, 1):
                lines.append(f'<Item number="{number}">')
                _write_dataset(item, lines)
                lines.append("</Item>")
        elif elem.VR in _BINARY_VRS:
            if elem.value:
                lines.append(f"<InlineBinary>{base64.b64encode(elem.value).decode('ascii')}</InlineBinary>")
        else:
            values = elem.value if elem.VM > 1 else ([] if elem.value in (None, "") else [elem.value])
            for number, value in enumerate(values, 1):
                if elem.VR == "PN":
                    lines.append(_person_name(number, PersonName(value)))
                else:
                    lines.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        lines.append("</DicomAttribute>")


def _person_name(number: int, name: PersonName) -> str:
    groups = []
    for group, text in zip(("Alphabetic", "Ideographic", "Phonetic"), name.components):
        if not text:
            continue
        parts = text.split("^")
        inner = "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in zip(_PN_COMPONENTS, parts) if value)
        groups.append(f"<{group}>{inner}</{group}>")
    return f'<PersonName number="{number}">{"".join(groups)}</PersonName>'
