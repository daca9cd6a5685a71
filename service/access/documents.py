"""Encapsulated documents (PS3.3 A.45, A.85; PDF, CDA, STL, OBJ, MTL): the document an
instance carries, found in its blob without reading it, so that ``…/rendered`` sends it
byte for byte (PS3.18 §10.4.1.1.3: the rendered form of an encapsulated document is the
document itself)."""
from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom.tag import Tag

from storage import Archive, StoredInstance
from storage.dataset import DEFLATED

from .header import stored_header

# SOP class → the media type of what it encapsulates, when the instance does not name one.
ENCAPSULATED = {
    "1.2.840.10008.5.1.4.1.1.104.1": "application/pdf",
    "1.2.840.10008.5.1.4.1.1.104.2": "text/xml",          # HL7 CDA
    "1.2.840.10008.5.1.4.1.1.104.3": "model/stl",
    "1.2.840.10008.5.1.4.1.1.104.4": "model/obj",
    "1.2.840.10008.5.1.4.1.1.104.5": "model/mtl",
}
DOCUMENT = Tag(0x0042, 0x0011)          # Encapsulated Document
DOCUMENT_LENGTH = Tag(0x0042, 0x0015)   # Encapsulated Document Length: the value without its pad byte
MIME_TYPE = Tag(0x0042, 0x0012)


class NoDocument(LookupError):
    pass


class DocumentTooLarge(Exception):
    """A deflated instance's document larger than it may be inflated for one answer."""


@dataclass(frozen=True)
class Document:
    """Where the document is: ``length`` bytes of the blob from ``offset``, or (for a deflated
    instance, whose blob offsets mean nothing) the bytes themselves."""

    media_type: str
    offset: int
    length: int
    data: bytes | None = None


def is_document(stored: StoredInstance) -> bool:
    return stored.sop_class_uid in ENCAPSULATED


def locate(archive: Archive, stored: StoredInstance, max_in_memory: int) -> Document:
    """The encapsulated document of ``stored``; NoDocument when it has none, DocumentTooLarge when a
    deflated one's document exceeds ``max_in_memory``."""
    default = ENCAPSULATED[stored.sop_class_uid]
    if stored.transfer_syntax_uid == DEFLATED:
        ds = stored_header(archive, stored)   # inflated within the archive's bound
        if DOCUMENT not in ds or not ds[DOCUMENT].value:
            raise NoDocument(stored.sop_instance_uid)
        data = bytes(ds[DOCUMENT].value)
        if len(data) > max_in_memory:
            raise DocumentTooLarge(f"the deflated instance's document is {len(data)} bytes, over {max_in_memory}")
        data = data[:_declared(ds, len(data))]
        return Document(_media_type(ds, default), 0, len(data), data)
    with archive.ranged(stored) as fp:
        # Values over 1 KiB are left unread: the document's is found, not loaded (nor copied).
        ds = pydicom.dcmread(fp, defer_size=1024, force=True)
        raw = ds.get_item(DOCUMENT, keep_deferred=True) if DOCUMENT in ds else None
    if raw is None or not raw.length or raw.length == 0xFFFFFFFF:
        raise NoDocument(stored.sop_instance_uid)
    offset = raw.value_tell if isinstance(raw, pydicom.dataelem.RawDataElement) else None
    if offset is None:   # read already (small): it is in the data set
        data = bytes(ds[DOCUMENT].value)
        data = data[:_declared(ds, len(data))]
        return Document(_media_type(ds, default), 0, len(data), data)
    return Document(_media_type(ds, default), offset, _declared(ds, raw.length))


def _declared(ds: pydicom.Dataset, stored_length: int) -> int:
    """The document's own length: Encapsulated Document Length where it fits, else the value's."""
    declared = ds.get(DOCUMENT_LENGTH)
    value = declared.value if declared is not None else None
    return value if isinstance(value, int) and 0 < value <= stored_length else stored_length


def _media_type(ds: pydicom.Dataset, default: str) -> str:
    element = ds.get(MIME_TYPE)
    value = str(element.value).strip() if element is not None and element.value else ""
    kind, _, sub = value.partition("/")
    ok = kind and sub and all(c.isalnum() or c in "!#$&-^_.+" for c in kind + sub) and len(value) <= 64
    return value.lower() if ok else default
