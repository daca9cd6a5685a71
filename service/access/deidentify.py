"""De-identification on retrieve: PS3.15 Annex E, the Basic Application Level Confidentiality
Profile, applied to the copy sent; what is stored is never touched.

Table-driven: every attribute of PS3.15 table E.1-1 with its Basic Profile action, as the
``dicom-anonymizer`` package keeps the table for each edition of the standard (``EDITION``):
a maintained transcription of the standard's own table beats one typed here. The actions:

- ``X`` removed; ``X/Z``, ``X/D``, ``X/Z/D`` removed too (the table allows it: Z or D only
  "to maintain IOD conformance", which we do not check);
- ``Z`` emptied; ``D`` and ``Z/D`` a dummy value of the VR (a pseudonym for Patient ID);
  a sequence with ``D`` keeps its items, their free text replaced by dummies (the coded
  concepts and numbers of a report's Content Sequence stay, its text does not);
- ``U`` a UID replaced consistently; ``X/Z/U*`` (references to images) kept as D sequences are,
  their UIDs replaced.

Beyond the table: private attributes removed (no Retain Safe Private option), overlays (60xx)
and curves (50xx) removed whole, every UI value that is not a UID of the standard's own
(PS3.6 Annex A) replaced as U, UR values (RetrieveURL…) removed, and any text value that
still quotes an identifying value of the original (names, IDs, UIDs) rewritten. No option
of the profile is applied; the method is stated in Deidentification Method (Code Sequence).

UIDs and pseudonyms are derived with a seed made from this server's secret, the peer and the
study (``seed``): the same peer gets the same pseudonyms for a study every time (so series
and references line up within and across answers), another peer other ones, and no one can
recompute the mapping from the public UIDs.

Pixels are not cleaned (no Clean Pixel Data option): images likely to show identifying text
are refused instead (``refusal``), as the profile allows.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import warnings
from typing import Any, Iterable

import pydicom
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as _table
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary
from ..wire.tags import KEY

EDITION = "2026c"
_CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
               "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}


def _load() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    exact: dict[int, str] = {}
    masked = []
    for category, action in _CATEGORIES.items():
        for entry in getattr(_table, category):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:   # repeating groups: (group, element, group mask, element mask)
                masked.append((entry[0], entry[1], entry[2], entry[3], action))
    return exact, masked


ACTIONS, _MASKED = _load()
REMOVE = frozenset({"X", "X/Z", "X/D", "X/Z/D"})
METHOD = f"PS3.15 E.1-1 Basic Application Level Confidentiality Profile ({EDITION}), no options"
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# Images that too often show names, IDs or dates in their pixels to be sent without them:
# ultrasound, angiography and fluoroscopy screens, endoscopy and photographs, scanned
# documents, and secondary captures (screenshots) of any modality (PS3.15 E.1.1, note 5).
BURNED_IN_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "SC", "OT", "DOC", "OP", "SM"})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"})
_FREE_TEXT_VRS = _TEXT_VRS - {"CS"}                            # CS holds defined terms, not words
_QUOTING_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})   # where a name or an ID may be written
_CODE_ITEM = frozenset(pydicom.datadict.tag_for_keyword(k) for k in (
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue", "URNCodeValue",
    "ContextIdentifier", "MappingResource", "ValueType", "RelationshipType", "ContinuityOfContent"))
_IDENTIFYING = ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
                "PatientMotherBirthName", "AccessionNumber", "StudyID", "IssuerOfPatientID",
                "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "InstitutionName")


class NotDeidentifiable(Exception):
    """An object this profile cannot make safe: its pixels or document may show who it is of."""


def seed(secret: bytes, peer: str | None, study_uid: str) -> str:
    return hmac.new(secret, f"{peer or ''}|{study_uid}".encode(), hashlib.sha256).hexdigest()


def action(tag: int) -> str | None:
    """The Basic Profile action of table E.1-1 for ``tag``, or None when the table does not list it."""
    found = ACTIONS.get(tag)
    if found is None:
        group, element = tag >> 16, tag & 0xFFFF
        for g, e, gmask, emask, masked in _MASKED:
            if group & gmask == g and element & emask == e:
                return masked
    return found


def refusal(attributes: dict[str, Any]) -> str | None:
    """Why an object cannot be de-identified here, from a few of its attributes (keyword → value:
    SOPClassUID, Modality, BurnedInAnnotation, RecognizableVisualFeatures, and whether it has
    PixelData or EncapsulatedDocument); None when it can. Pixels are not cleaned, so an image
    is refused when it says it has burned-in text, when its face can be recognised, and when it
    is of a kind that usually carries such text but does not say it has none."""
    if attributes.get("EncapsulatedDocument"):
        return "an encapsulated document's content cannot be de-identified"
    if not attributes.get("PixelData"):
        return None
    burned = str(attributes.get("BurnedInAnnotation") or "").strip().upper()
    if burned == "YES":
        return "the image has burned-in annotations, which de-identification does not remove"
    if str(attributes.get("RecognizableVisualFeatures") or "").strip().upper() == "YES":
        return "the image shows recognisable visual features, which de-identification does not remove"
    modality = str(attributes.get("Modality") or "").strip().upper()
    sop_class = str(attributes.get("SOPClassUID") or "")
    if burned != "NO" and (modality in BURNED_IN_MODALITIES or sop_class.startswith(SECONDARY_CAPTURE)):
        return (f"a {modality or 'secondary capture'} image may show identifying text in its pixels and does "
                "not say otherwise (Burned In Annotation is not NO)")
    return None


def refusal_of_model(model: dict) -> str | None:
    """``refusal`` from an instance's DICOM JSON (its stored metadata), without reading its blob."""
    def first(tag: str):
        values = model.get(tag, {}).get("Value") if isinstance(model.get(tag), dict) else None
        return values[0] if values else None

    found = {keyword: first(getattr(KEY, keyword))
             for keyword in ("SOPClassUID", "Modality", "BurnedInAnnotation", "RecognizableVisualFeatures")}
    pixels = (KEY.PixelData, KEY.FloatPixelData, KEY.DoubleFloatPixelData)
    return refusal({**found, "PixelData": any(tag in model for tag in pixels),
                    "EncapsulatedDocument": KEY.EncapsulatedDocument in model})


def refusal_of_dataset(ds: Dataset) -> str | None:
    return refusal({"SOPClassUID": ds.get("SOPClassUID"), "Modality": ds.get("Modality"),
                    "BurnedInAnnotation": ds.get("BurnedInAnnotation"),
                    "RecognizableVisualFeatures": ds.get("RecognizableVisualFeatures"),
                    "PixelData": any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)),
                    "EncapsulatedDocument": 0x00420011 in ds})


def deidentify(ds: Dataset, seed_value: str, pixels: bool = True) -> None:
    """De-identify ``ds`` in place, its file meta too. With ``pixels``, an object ``refusal``
    names a reason for raises NotDeidentifiable (without: metadata, which has no pixels)."""
    if pixels:
        reason = refusal_of_dataset(ds)
        if reason:
            raise NotDeidentifiable(reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _Profile(seed_value, ds).apply(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE
        ds.DeidentificationMethodCodeSequence = pydicom.Sequence([code])
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                            "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
                if keyword in meta:
                    del meta[keyword]
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


class _Profile:
    """One application of the profile to one data set: its pseudonyms and the identifying
    values of the original that no text of the copy may still quote."""

    def __init__(self, seed_value: str, original: Dataset) -> None:
        self.key = seed_value.encode()
        self.quoted = _identifying_values(original)

    def uid(self, value: str) -> str:
        value = value.strip().rstrip("\x00")
        if not value or value in UID_dictionary:   # a UID of the standard (SOP class, syntax…) is kept
            return value
        digest = hmac.new(self.key, b"uid|" + value.encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def pseudonym(self, value: str) -> str:
        return "ANON" + hmac.new(self.key, b"id|" + value.encode(), hashlib.sha256).hexdigest()[:12].upper()

    def apply(self, ds: Dataset, free_text: bool = False) -> None:
        """The table at every depth; ``free_text``: inside a sequence whose action is D, where
        every text value but those of coded concepts becomes a dummy."""
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag.is_private or (tag >> 16) & 0xFF01 in (0x6000, 0x5000):
                del ds[elem.tag]   # private attributes; overlays and curves, whole
                continue
            found = action(tag)
            if found in REMOVE or (found is None and elem.VR == "UR"):
                del ds[elem.tag]
            elif found == "Z":
                elem.value = [] if elem.VR == "SQ" else None
            elif found in ("D", "Z/D", "X/Z/U*"):
                if elem.VR == "SQ":   # kept for its structure (codes, numbers, references), not its text
                    self._items(elem, True)
                else:
                    self._dummy(elem, tag)
            elif elem.VR == "SQ":
                self._items(elem, free_text)
            elif elem.VR == "UI":
                elem.value = _map(elem.value, self.uid)
            elif free_text and elem.VR in _FREE_TEXT_VRS and tag not in _CODE_ITEM:
                self._dummy(elem, tag)
            elif elem.VR in _QUOTING_VRS and self.quoted:
                elem.value = _map(elem.value, self._unquoted)

    def _items(self, elem, free_text: bool) -> None:
        for item in elem.value:
            self.apply(item, free_text)

    def _dummy(self, elem, tag: int) -> None:
        """A value of the VR that says nothing: a pseudonym for Patient ID, so that the instances
        of a study still name one patient."""
        vr = elem.VR
        if tag == 0x00100020:
            elem.value = self.pseudonym(str(elem.value or ""))
        elif vr == "UI":
            elem.value = _map(elem.value, self.uid)
        elif vr in ("DA", "DT", "TM"):
            elem.value = {"DA": "19000101", "DT": "19000101000000", "TM": "000000"}[vr]
        elif vr == "AS":
            elem.value = "000Y"
        elif vr in ("IS", "DS"):
            elem.value = "0"
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
            elem.value = 0
        elif vr == "PN":
            elem.value = "ANONYMIZED"
        elif vr in _TEXT_VRS or vr in ("UR",):
            elem.value = "ANONYMIZED"
        else:   # binary (OB, OW, UN…): two zero bytes, the shortest even value
            elem.value = b"\x00\x00"

    def _unquoted(self, text: str) -> str:
        """``text`` with every identifying value of the original it quotes rewritten."""
        if not isinstance(text, str) or not text:
            return text
        for value, replacement in self.quoted:
            if value.lower() in text.lower():   # whole words only: "Doe" in "Doe, J." but not in "Doeskin"
                pattern = r"(?<![0-9A-Za-z.])" + re.escape(value) + r"(?![0-9A-Za-z]|\.[0-9])"
                text = re.sub(pattern, replacement or self.uid(value), text, flags=re.IGNORECASE)
        return text


def deidentify_model(model: dict, seed_value: str) -> dict:
    """An instance's DICOM JSON (its metadata), de-identified as its instance would be. Bulk data
    is left out: BulkDataURIs are URLs made of the original UIDs, and their values are not here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset.from_json(_without_bulk_data(model))
        deidentify(ds, seed_value, pixels=False)
        return ds.to_json_dict(bulk_data_threshold=1 << 30)


def _without_bulk_data(model: dict) -> dict:
    kept = {}
    for tag, attribute in model.items():
        if "BulkDataURI" in attribute:
            continue
        if attribute.get("vr") == "SQ" and "Value" in attribute:
            attribute = {**attribute, "Value": [_without_bulk_data(item) for item in attribute["Value"]]}
        kept[tag] = attribute
    return kept


def _identifying_values(ds: Dataset) -> list[tuple[str, str]]:
    """(value, replacement) for what identifies the original and could be quoted in free text:
    names (whole and each component of three letters or more), IDs of three characters or more,
    and the instance's own UIDs (replaced by their pseudonymous UIDs: an empty replacement says so)."""
    found: dict[str, str] = {}
    for keyword in _IDENTIFYING:
        for value in _values(ds.get(keyword)):
            text = str(value).strip()
            if len(text) >= 3:
                found[text] = "ANONYMIZED"
            if keyword.endswith("Name") or keyword.endswith("Names"):
                for component in re.split(r"[\^=\s]+", text):
                    if len(component) >= 3:
                        found.setdefault(component, "ANONYMIZED")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        for value in _values(ds.get(keyword)):
            if str(value):
                found[str(value)] = ""
    return sorted(found.items(), key=lambda pair: -len(pair[0]))   # the longest first: "Doe^Jane" before "Doe"


def _values(value) -> Iterable:
    if value is None or value == "":
        return ()
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return [v for v in value if v not in (None, "")]
    return (value,)


def _map(value, function):
    if isinstance(value, (pydicom.multival.MultiValue, list)):
        return [function(str(v)) if v is not None else v for v in value]
    return function(str(value)) if value is not None else value
