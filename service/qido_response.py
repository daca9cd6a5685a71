"""Formatting QIDO-RS results as the DICOM JSON model (PS3.18 Annex F) — pure."""
from __future__ import annotations

from typing import Any, Sequence

from storage.search import Attribute

from . import urls

RETRIEVE_URL = ("00081190", "UR")
INSTANCE_AVAILABILITY = ("00080056", "CS")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _element(vr: str, value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == []:
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        values = [{group: text for group, text in zip(_PN_GROUPS, str(v).split("=")) if text} for v in values]
    return {"vr": vr, "Value": values}


def result_json(row: dict[str, Any], returned: Sequence[Attribute], level: str, base_url: str) -> dict[str, Any]:
    """One match as a DICOM JSON object, attributes in tag order, with its Retrieve URL (PS3.18 §10.6.3.3)."""
    elements = {f"{a.tag:08X}": _element(a.vr, row.get(a.keyword)) for a in returned}
    study = row.get("StudyInstanceUID")
    series = row.get("SeriesInstanceUID") if level != "study" else None
    instance = row.get("SOPInstanceUID") if level == "instance" else None
    elements[RETRIEVE_URL[0]] = _element(RETRIEVE_URL[1], urls.retrieve_url(base_url, study, series, instance))
    if level in ("study", "instance"):
        elements[INSTANCE_AVAILABILITY[0]] = _element(INSTANCE_AVAILABILITY[1], "ONLINE")
    return dict(sorted(elements.items()))
