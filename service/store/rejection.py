"""Rejection Notes (IHE IOCM; PS3.3 Key Object Selection with a rejection code as its title),
made from the instances they reject — pure: pydicom data sets in, Part 10 bytes out."""
from __future__ import annotations

import io
from datetime import datetime
from typing import Sequence

from pydicom import Dataset, Sequence as DicomSequence, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
# DICOM CID 7011 "Rejected for Quality Reasons" and its siblings, as IOCM uses them.
REJECTION_CODES = {
    ("113001", "DCM"): "Rejected for Quality Reasons",
    ("113037", "DCM"): "Rejected for Patient Safety Reasons",
    ("113038", "DCM"): "Incorrect Modality Worklist Entry",
    ("113039", "DCM"): "Data Retention Policy Expired",
}
_PATIENT_AND_STUDY = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                      "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                      "ReferringPhysicianName", "StudyID", "StudyDescription")


class UnknownRejectionCode(Exception):
    """A code that names none of the rejection reasons of PS3.3 CID 7011."""


def parse_code(text: str) -> tuple[str, str]:
    """``113001^DCM`` → ("113001", "DCM"); UnknownRejectionCode naming the codes known."""
    value, _, scheme = text.partition("^")
    if (value, scheme) not in REJECTION_CODES:
        known = ", ".join(f"{v}^{s} ({meaning})" for (v, s), meaning in REJECTION_CODES.items())
        raise UnknownRejectionCode(f"{text[:80]!r} is not a rejection code; known: {known}")
    return value, scheme


def rejection_note(header: Dataset, rejected: Sequence[tuple[str, str, str]], code: tuple[str, str],
                   image_classes: frozenset[str] | set[str] = frozenset()) -> tuple[str, str, bytes]:
    """The Rejection Note of ``rejected`` ((series, SOP instance, SOP class) of one study), with
    the patient and study attributes of ``header`` (an instance of that study): its series UID,
    SOP Instance UID and Part 10 bytes. Items of ``image_classes`` are referenced as IMAGE."""
    note = Dataset()
    for keyword in _PATIENT_AND_STUDY:
        if keyword in header:
            setattr(note, keyword, header.data_element(keyword).value)
    now = datetime.now()
    note.SOPClassUID, note.SOPInstanceUID = KEY_OBJECT_SELECTION, generate_uid()
    note.SeriesInstanceUID, note.Modality, note.SeriesNumber, note.InstanceNumber = generate_uid(), "KO", 9999, 1
    note.SeriesDescription = "Rejection Note"
    note.ContentDate, note.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    note.ReferencedPerformedProcedureStepSequence = DicomSequence()
    note.ValueType, note.ContinuityOfContent = "CONTAINER", "SEPARATE"
    note.ConceptNameCodeSequence = DicomSequence([_code(*code, REJECTION_CODES[code])])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    note.ContentTemplateSequence = DicomSequence([template])
    by_series: dict[str, list[Dataset]] = {}
    items = []
    for series_uid, sop_uid, sop_class in rejected:
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class, sop_uid
        by_series.setdefault(series_uid, []).append(reference)
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE" if sop_class in image_classes else "COMPOSITE"
        item.ReferencedSOPSequence = DicomSequence([_copy(reference)])
        items.append(item)
    note.ContentSequence = DicomSequence(items)
    study = Dataset()
    study.StudyInstanceUID = header.StudyInstanceUID
    study.ReferencedSeriesSequence = DicomSequence()
    for series_uid, references in by_series.items():
        entry = Dataset()
        entry.SeriesInstanceUID = series_uid
        entry.ReferencedSOPSequence = DicomSequence(references)
        study.ReferencedSeriesSequence.append(entry)
    note.CurrentRequestedProcedureEvidenceSequence = DicomSequence([study])
    note.file_meta = FileMetaDataset()
    note.file_meta.MediaStorageSOPClassUID, note.file_meta.MediaStorageSOPInstanceUID = note.SOPClassUID, note.SOPInstanceUID
    note.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    dcmwrite(out, note, enforce_file_format=True)
    return note.SeriesInstanceUID, note.SOPInstanceUID, out.getvalue()


def rejected_by(note: Dataset) -> tuple[tuple[str, str], list[tuple[str, str, str]]] | None:
    """The code and the (study, series, SOP instance) a Rejection Note rejects; None for any
    other object (another KOS, an image)."""
    if note.get("SOPClassUID") != KEY_OBJECT_SELECTION or not note.get("ConceptNameCodeSequence"):
        return None
    concept = note.ConceptNameCodeSequence[0]
    code = (str(concept.get("CodeValue", "")), str(concept.get("CodingSchemeDesignator", "")))
    if code not in REJECTION_CODES:
        return None
    referenced = [(str(study.StudyInstanceUID), str(series.SeriesInstanceUID), str(sop.ReferencedSOPInstanceUID))
                  for study in note.get("CurrentRequestedProcedureEvidenceSequence", [])
                  for series in study.get("ReferencedSeriesSequence", [])
                  for sop in series.get("ReferencedSOPSequence", [])]
    return code, referenced


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _copy(reference: Dataset) -> Dataset:
    copy = Dataset()
    copy.ReferencedSOPClassUID, copy.ReferencedSOPInstanceUID = (reference.ReferencedSOPClassUID,
                                                                 reference.ReferencedSOPInstanceUID)
    return copy
