"""UID validation and the one place that turns UIDs into blob keys.

PS3.5 §9.1: a UID is dot-separated numeric components, at most 64 characters.
We accept components with leading zeros (real archives hold such UIDs and must
be able to serve them back) but nothing beyond digits and single dots, which is
what makes a UID safe to use in a path or an object key.
"""
from __future__ import annotations

import hashlib
import re

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
MAX_UID_LENGTH = 64


class InvalidUID(Exception):
    """A string that is not a DICOM UID."""


def is_valid_uid(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID.fullmatch(value) is not None
    )


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a well-formed UID, else raise InvalidUID."""
    if not is_valid_uid(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else "…"
        raise InvalidUID(f"{what} {shown!r} is not a valid DICOM UID")
    return value  # type: ignore[return-value]


def blob_key(study: str, series: str, instance: str, sha256_hex: str) -> str:
    """The blob key of one stored instance version.

    Keys are sharded by a hash of the study UID so no directory or S3 prefix
    grows without bound, and end with a digest of the content so identical
    uploads land on the same key while different content never overwrites a
    blob that the catalog still points at.
    """
    validate_uid(study, "Study Instance UID")
    validate_uid(series, "Series Instance UID")
    validate_uid(instance, "SOP Instance UID")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise ValueError("content digest must be 64 lowercase hex digits")
    shard = hashlib.sha1(study.encode("ascii")).hexdigest()
    return f"{shard[:2]}/{shard[2:4]}/{study}/{series}/{instance}.{sha256_hex[:20]}.dcm"
