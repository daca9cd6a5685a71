"""Formatting QIDO-RS results as the DICOM JSON model (PS3.18 Annex F) — pure.

Search answers are hot paths (a hundred results of fifteen attributes each):
the per-attribute work is decided once per query by ``ResultFormat``, not per value.
"""
from __future__ import annotations

from typing import Any, Sequence

from storage.search import Attribute

from ..wire import urls
from ..wire.tags import KEY

RETRIEVE_URL = KEY.RetrieveURL
INSTANCE_AVAILABILITY = KEY.InstanceAvailability
# Left out of a result rather than sent without a value: OHIF 3 reads ModalitiesInStudy's
# Value unguarded (getModalities), and one study whose instances name no Modality (pydicom's
# test files hold three) failed its whole study list. docs/conformance.md has the choice.
OMITTED_WHEN_EMPTY = frozenset({KEY.ModalitiesInStudy})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _person_names(values: list) -> list[dict[str, str]]:
    names = []
    for value in values:
        if "=" not in value:   # the common case: one alphabetic group
            names.append({"Alphabetic": value})
        else:
            names.append({group: text for group, text in zip(_PN_GROUPS, value.split("=")) if text})
    return names


class ResultFormat:
    """Turns result rows of one query into DICOM JSON objects, attributes in tag order."""

    def __init__(self, returned: Sequence[Attribute], level: str, base_url: str) -> None:
        fields = [(f"{a.tag:08X}", a.keyword, a.vr) for a in returned]
        if level != "patient":   # PS3.18 has no patient-level retrieve
            fields.append((RETRIEVE_URL, None, "UR"))
        if level in ("study", "instance"):
            fields.append((INSTANCE_AVAILABILITY, None, "CS"))
        self._fields = sorted(fields)
        self._level = level
        self._base_url = base_url

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for tag, keyword, vr in self._fields:
            if tag == RETRIEVE_URL:
                value: Any = self._retrieve_url(row)
            elif tag == INSTANCE_AVAILABILITY and keyword is None:
                value = "ONLINE"
            else:
                value = row.get(keyword)
            if value is None or value == "" or value == []:
                if tag not in OMITTED_WHEN_EMPTY:
                    result[tag] = {"vr": vr}
                continue
            values = value if isinstance(value, list) else [value]
            result[tag] = {"vr": vr, "Value": _person_names(values) if vr == "PN" else values}
        if "_stored" in row:   # includefield attributes from stored metadata: already DICOM JSON
            for tag, element in row["_stored"].items():
                uri = element.get("BulkDataURI", "")
                result[tag] = {**element, "BulkDataURI": self._base_url + uri} if uri.startswith("/") else element
            result = dict(sorted(result.items()))
        return result

    def _retrieve_url(self, row: dict[str, Any]) -> str:
        """PS3.18 §10.6.3.3: the URL retrieving the matched study, series or instance."""
        series = row.get("SeriesInstanceUID") if self._level != "study" else None
        instance = row.get("SOPInstanceUID") if self._level == "instance" else None
        return urls.retrieve_url(self._base_url, row.get("StudyInstanceUID"), series, instance)


def without_empty_omitted(result: dict[str, Any]) -> dict[str, Any]:
    """An upstream's result shaped as ours are: the attributes of OMITTED_WHEN_EMPTY left out
    when they hold no value."""
    if any(tag in result and not result[tag].get("Value") for tag in OMITTED_WHEN_EMPTY):
        return {tag: element for tag, element in result.items()
                if not (tag in OMITTED_WHEN_EMPTY and not element.get("Value"))}
    return result
