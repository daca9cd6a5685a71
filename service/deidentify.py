"""Anonymisation on retrieve: PS3.15 Annex E, Basic Application Level Confidentiality Profile,
applied to the delivered copy; what is stored is never touched.

dicognito does most of the profile's table (identifying attributes replaced by dummies,
UIDs and dates remapped); we add what it leaves: the attributes the table removes (X,
and X/Z/D where removing is allowed) that it keeps — DeviceSerialNumber was one —, private
attributes (no Retain Safe Private option), Patient Identity Removed = YES and the
De-identification Method and its code (PS3.16 CID 7050). Its remapping is seeded per peer and study with a secret of
this server: the same peer gets the same pseudonymous UIDs for a study every time (so
series and references line up within and across answers), another peer other ones, and
no one can recompute the mapping from the public UIDs.
"""
from __future__ import annotations

import hashlib
import hmac
import warnings

import pydicom
from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset

# PS3.15 table E.1-1: attributes whose basic-profile action removes them (X), or allows it (X/Z, X/D,
# X/Z/D, X/Z/U*). Applied at every depth, after dicognito.
REMOVED = (
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdditionalPatientHistory", "AdmissionID",
    "AdmittingDate", "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "AdmittingTime",
    "Allergies", "AuthorObserverSequence", "BranchOfService", "CassetteID",
    "CommentsOnThePerformedProcedureStep", "ConfidentialityConstraintOnPatientDataDescription",
    "ContentCreatorIdentificationCodeSequence", "ContributionDescription", "CountryOfResidence",
    "CurrentPatientLocation", "CustodialOrganizationSequence", "DataSetTrailingPadding", "DerivationDescription",
    "DetectorID", "DeviceSerialNumber", "DigitalSignaturesSequence", "DischargeDiagnosisDescription",
    "DistributionAddress", "DistributionName", "EthnicGroup", "FillerOrderNumberImagingServiceRequest",
    "FrameComments", "GantryID", "GeneratorID", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionName",
    "InsurancePlanIdentification", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence", "InterpretationAuthor", "InterpretationDiagnosisDescription",
    "InterpretationIDIssuer", "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber",
    "IssuerOfAdmissionID", "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "LastMenstrualDate", "MedicalAlerts",
    "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence", "ModifiedImageDescription",
    "ModifyingDeviceID", "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorsName", "OrderCallbackPhoneNumber", "OrderEnteredBy", "OrderEntererLocation",
    "OriginalAttributesSequence", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "ParticipantSequence", "PatientAddress", "PatientAge", "PatientBirthName", "PatientBirthTime",
    "PatientComments", "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence", "PatientReligiousPreference",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelephoneNumbers",
    "PatientTransportArrangements", "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence",
    "PerformedStationName", "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonTelephoneNumbers", "PhysicianApprovingInterpretation",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "PlacerOrderNumberImagingServiceRequest", "PlateID",
    "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForStudy", "ReferencedPatientAliasSequence",
    "ReferencedPatientSequence", "ReferencedPerformedProcedureStepSequence", "ReferencedStudySequence",
    "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers",
    "RegionOfResidence", "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation", "RequestingPhysician",
    "RequestingService", "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments",
    "ResultsDistributionListSequence", "ResultsIDIssuer", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepLocation",
    "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName",
    "ScheduledStationNameCodeSequence", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    "SeriesDescription", "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus", "SpecialNeeds",
    "StationName", "StudyComments", "StudyDescription", "StudyIDIssuer", "TextComments", "TextString",
    "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence",
    "VisitComments",
)
_REMOVED_TAGS = frozenset(pydicom.datadict.tag_for_keyword(k) for k in REMOVED)

METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile (dicognito), private attributes removed"


def seed(secret: bytes, peer: str | None, study_uid: str) -> str:
    return hmac.new(secret, f"{peer or ''}|{study_uid}".encode(), hashlib.sha256).hexdigest()


class BurnedIn(ValueError):
    """Pixel data that shows identifying text: the profile cannot make it safe."""


def deidentify(ds: Dataset, seed_value: str, pixels: bool = True) -> None:
    """De-identify ``ds`` in place (its file meta too). With ``pixels``, an image whose
    Burned In Annotation is YES is refused (BurnedIn): removing text from pixels is the
    Clean Pixel Data option, which this server does not do."""
    if pixels and "PixelData" in ds and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise BurnedIn("the image has burned-in annotations, which de-identification does not remove")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Anonymizer(seed=seed_value).anonymize(ds)
        ds.remove_private_tags()
        _remove(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = pydicom.Sequence([code])
        if hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _remove(ds: Dataset) -> None:
    for tag in [elem.tag for elem in ds if elem.tag in _REMOVED_TAGS]:
        del ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _remove(item)
