"""Reading what the archive needs from one DICOM Part 10 file.

Pure functions over a seekable file object; no storage, no HTTP.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from .status import FailureReason
from .uids import is_valid_uid

PATIENT_KEYWORDS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = (
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "StudyID",
)
SERIES_KEYWORDS = (
    "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
)
INSTANCE_KEYWORDS = ("InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated")
INTEGER_KEYWORDS = frozenset({*INSTANCE_KEYWORDS, "SeriesNumber"})


class RejectedInstance(Exception):
    """An instance the archive will not store, with its PS3.4 failure reason."""

    def __init__(self, reason: FailureReason, message: str, sop_class: str | None = None,
                 sop_instance: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class = sop_class
        self.sop_instance = sop_instance


@dataclass(frozen=True)
class InstanceHeader:
    """The identifying and searchable attributes of one instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient: dict = field(default_factory=dict)
    study: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    instance: dict = field(default_factory=dict)


def _value(ds: pydicom.Dataset, keyword: str) -> str | int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return None
    if keyword in INTEGER_KEYWORDS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return str(value)


def read_header(fp: BinaryIO) -> InstanceHeader:
    """Parse the Part 10 header and data set up to Pixel Data.

    Raises RejectedInstance with 0xC000 when the bytes are not a Part 10 file
    with a transfer syntax, or 0xA900 when identifying UIDs are absent or malformed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _header(pydicom.dcmread(fp, stop_before_pixels=True))
    except RejectedInstance:
        raise
    except InvalidDicomError as exc:
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, f"not a DICOM Part 10 file: {exc}") from None
    except Exception as exc:  # pydicom raises many types on damaged input
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND, f"unreadable DICOM data: {exc}") from None


def _header(ds: pydicom.Dataset) -> InstanceHeader:
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "") or str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    ids = {"sop_class": sop_class or None, "sop_instance": sop_instance or None}
    if not is_valid_uid(ts):
        raise RejectedInstance(FailureReason.CANNOT_UNDERSTAND,
                               "file meta information has no valid Transfer Syntax UID (0002,0010)", **ids)
    checks = (
        ("SOP Class UID (0008,0016)", sop_class),
        ("SOP Instance UID (0008,0018)", sop_instance),
        ("Study Instance UID (0020,000D)", str(ds.get("StudyInstanceUID", "") or "")),
        ("Series Instance UID (0020,000E)", str(ds.get("SeriesInstanceUID", "") or "")),
    )
    for name, value in checks:
        if not value:
            raise RejectedInstance(FailureReason.DATASET_MISMATCH, f"{name} is missing", **ids)
        if not is_valid_uid(value):
            raise RejectedInstance(FailureReason.DATASET_MISMATCH, f"{name} {value[:80]!r} is not a valid UID", **ids)

    def pick(keywords: tuple[str, ...]) -> dict:
        return {k: v for k in keywords if (v := _value(ds, k)) is not None}

    return InstanceHeader(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=ts,
        patient=pick(PATIENT_KEYWORDS),
        study=pick(STUDY_KEYWORDS),
        series=pick(SERIES_KEYWORDS),
        instance=pick(INSTANCE_KEYWORDS),
    )
