"""The shape of a DICOM JSON object (PS3.18 Annex F), checked before anything reads it: what a
peer sends as a data set (STOW metadata, a Storage Commitment request, a workitem) is walked
by code that expects objects where the annex has objects and arrays where it has arrays."""
from __future__ import annotations

import re
from typing import Any

# Deeper than any real data set (SR content trees nest a dozen levels), shallow enough that
# no reader of ours, pydicom's included, recurses near Python's limit.
MAX_SEQUENCE_DEPTH = 64

_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class MalformedDataset(Exception):
    """DICOM JSON or XML that is not a data set: the peer's to mend."""


def check_model(model: Any, depth: int = 0) -> None:
    """MalformedDataset unless ``model`` has the shape of a DICOM JSON object (PS3.18 F.2): tags
    of 8 hex digits, each an object with a string "vr", a "Value" array or a string
    "BulkDataURI" or "InlineBinary"; sequence items objects themselves, nested no deeper than
    readers should recurse."""
    if not isinstance(model, dict):
        raise MalformedDataset("a data set is a JSON object of attributes")
    if depth > MAX_SEQUENCE_DEPTH:
        raise MalformedDataset(f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep")
    for tag, attribute in model.items():
        if not _TAG.fullmatch(tag):
            raise MalformedDataset(f"DICOM JSON attribute {tag[:20]!r} is not a tag of 8 hexadecimal digits")
        if not isinstance(attribute, dict) or not isinstance(attribute.get("vr", ""), str):
            raise MalformedDataset(f"DICOM JSON attribute {tag} is not an object with a vr")
        for key in ("BulkDataURI", "InlineBinary"):
            if key in attribute and not isinstance(attribute[key], str):
                raise MalformedDataset(f"DICOM JSON attribute {tag}: {key} is not a string")
        values = attribute.get("Value", [])
        if not isinstance(values, list):
            raise MalformedDataset(f"DICOM JSON attribute {tag}: Value is not an array")
        if attribute.get("vr") == "SQ":
            for item in values:
                if item is not None and not isinstance(item, dict):
                    raise MalformedDataset(f"DICOM JSON attribute {tag}: a sequence item is not an object")
                check_model(item or {}, depth + 1)
