"""An instance's metadata as the DICOM JSON model (PS3.18 Annex F), made once at ingest.

Stored with the instance so that study and series metadata are served by
concatenation rather than by parsing every file. Binary values longer than
``BULK_DATA_THRESHOLD`` and Pixel Data become BulkDataURIs; shorter ones are
InlineBinary. BulkDataURIs are stored as paths under the DICOMweb root
(``/studies/…/bulk/…``) and made absolute when served, since the public base
URL belongs to the request, not to the archive.
"""
from __future__ import annotations

from typing import Iterator

import orjson
import pydicom
import pydicom.datadict
from pydicom.dataelem import DataElement

BULK_DATA_THRESHOLD = 1024
BULK_DATA_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
URI_KEY = b'"BulkDataURI":"/'


def bulk_data_base(study: str, series: str, instance: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{instance}/bulk/"


def _bulk_paths(ds: pydicom.Dataset, prefix: str = "") -> Iterator[tuple[int, str]]:
    """(id of element, tag path) for every binary element, nested ones as ``tag/item/tag``."""
    for elem in ds:
        path = f"{prefix}{elem.tag:08X}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value, 1):
                yield from _bulk_paths(item, f"{path}/{index}/")
        elif elem.VR in BULK_DATA_VRS:
            yield id(elem), path


def _unread_as_bulk(ds: pydicom.Dataset) -> None:
    """Binary values pydicom deferred (read with ``defer_size``: a large document or private blob)
    replaced, at every depth, by a placeholder above the bulk data threshold, so that they become
    BulkDataURIs without ever being read into memory."""
    # The raw elements themselves: Dataset.elements() and get_item() read private values to convert them.
    for raw in list(ds._dict.values()):
        if isinstance(raw, pydicom.dataelem.RawDataElement) and raw.value is None \
                and BULK_DATA_THRESHOLD < raw.length < 0xFFFFFFFF:   # deferred (an empty value is None too)
            vr = raw.VR or (pydicom.datadict.dictionary_VR(raw.tag) if pydicom.datadict.dictionary_has_tag(raw.tag)
                            else "UN")
            if vr in BULK_DATA_VRS:
                ds[raw.tag] = DataElement(raw.tag, vr, _PLACEHOLDER)
                continue
        if (raw.VR or "") == "SQ" or (not isinstance(raw, pydicom.dataelem.RawDataElement) and raw.VR == "SQ"):
            for item in ds[raw.tag].value:
                _unread_as_bulk(item)


_PLACEHOLDER = b"\0" * (BULK_DATA_THRESHOLD + 2)


AVAILABLE_TRANSFER_SYNTAX = "00083002"


def instance_metadata(ds: pydicom.Dataset, study: str, series: str, instance: str,
                      pixel_data: tuple[int, str] | None, transfer_syntax: str | None = None) -> bytes:
    """The DICOM JSON object of a data set read up to Pixel Data (its large values possibly
    deferred, and then left unread).

    ``pixel_data`` is the (tag, VR) of the pixel element that followed, if any; it
    is always referenced by BulkDataURI, never inlined. ``transfer_syntax``, the syntax the
    instance is stored in, is given as Available Transfer Syntax UID (0008,3002), where
    viewers look for it (OHIF tells a video from an image by it).
    """
    _unread_as_bulk(ds)
    base = bulk_data_base(study, series, instance)
    paths = dict(_bulk_paths(ds))

    def uri(elem: DataElement) -> str:
        return base + paths.get(id(elem), f"{elem.tag:08X}")

    model = _json_model(ds, uri)
    if pixel_data is not None:
        tag, vr = pixel_data
        model[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": base + f"{tag:08X}"}
    if transfer_syntax:
        model[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [transfer_syntax]}
    return orjson.dumps(dict(sorted(model.items())))


def with_transfer_syntax(metadata: bytes, transfer_syntax: str) -> bytes:
    """Stored metadata naming another syntax the instance is stored in (a deflated instance's,
    whose metadata is made from its inflated copy)."""
    model = orjson.loads(metadata)
    model[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [transfer_syntax]}
    return orjson.dumps(dict(sorted(model.items())))


def _json_model(ds: pydicom.Dataset, uri) -> dict:  # noqa: ANN001
    try:
        return _dataset_json(ds, uri)
    except Exception:
        pass
    # Real files carry values their VR does not allow (an IS of "1A"): rather than refuse
    # the instance, such a value is kept as the string it is, and the others as usual.
    model = {}
    for elem in ds:
        try:
            model[f"{elem.tag:08X}"] = elem.to_json_dict(uri, BULK_DATA_THRESHOLD)
        except Exception:
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            model[f"{elem.tag:08X}"] = {"vr": elem.VR, "Value": [str(v) for v in values]}
    return model


# VRs whose values pydicom has already made strings or numbers: their JSON is those values in a
# list (numbers as int or float), made here without DataElement.to_json_dict's per-call VR set
# arithmetic and properties, which cost a fifth of a small instance's STOW. Any other VR, and
# any value of a type not expected here, goes to pydicom's to_json_dict, as before.
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"DS", "FD", "FL"})
_SIMPLE_VRS = _STRING_VRS | _INT_VRS | _FLOAT_VRS


def _dataset_json(ds: pydicom.Dataset, uri) -> dict:  # noqa: ANN001
    """What ``ds.to_json_dict(BULK_DATA_THRESHOLD, uri)`` gives (tests/test_metadata_rs.py holds
    them equal over pydicom's test files), raising where it raises."""
    model = {}
    for tag in list(ds._dict):
        elem = ds[tag]
        model[f"{tag:08X}"] = _element_json(elem, uri)
    return model


def _element_json(elem: DataElement, uri) -> dict:  # noqa: ANN001
    vr = elem.VR
    if vr == "SQ":
        return {"vr": vr, "Value": [_dataset_json(item, uri) for item in elem.value]}
    if vr not in _SIMPLE_VRS:
        return elem.to_json_dict(uri, BULK_DATA_THRESHOLD)
    value = elem.value
    if isinstance(value, (str, int, float)):
        if isinstance(value, str) and not value:
            return {"vr": vr}
        values = [value]
    elif isinstance(value, pydicom.multival.MultiValue) and not any(v is None for v in value):
        if not value:
            return {"vr": vr}
        values = list(value)
    elif value is None:
        return {"vr": vr}
    else:
        return elem.to_json_dict(uri, BULK_DATA_THRESHOLD)
    if vr in _INT_VRS:
        values = [int(v) for v in values]
    elif vr in _FLOAT_VRS:
        values = [float(v) for v in values]
    return {"vr": vr, "Value": values}


def with_base_url(metadata: bytes, base_url: str) -> bytes:
    """Make the stored BulkDataURI paths absolute under ``base_url``.

    Only our own keys can contain the quoted ``"BulkDataURI":"/`` sequence:
    quotes inside values are escaped in JSON.
    """
    return metadata.replace(URI_KEY, b'"BulkDataURI":"' + base_url.rstrip("/").encode() + b"/")
