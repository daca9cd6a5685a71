"""Synthetic but valid DICOM studies, for tests and benchmarks.

Instances are CT Image Storage with real-looking patient, study and series
attributes and pixel data of the requested size, written as Part 10 files.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset, FileMetaDataset, dcmwrite
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class StudySpec:
    series: int = 2
    instances_per_series: int = 10
    rows: int = 512
    columns: int = 512
    transfer_syntax: str = ExplicitVRLittleEndian


def ct_instance(study_uid: str, series_uid: str, sop_uid: str | None = None, number: int = 1, rows: int = 64,
                columns: int = 64, transfer_syntax: str = ExplicitVRLittleEndian, patient_id: str = "PAT-1",
                patient_name: str = "Doe^Jane", series_number: int = 1, seed: int | None = None,
                frames: int = 1, pixels: np.ndarray | None = None, **attributes: object) -> bytes:
    """One CT slice as Part 10 bytes; ``attributes`` (by keyword) override the defaults.
    The pixels are uniform noise (incompressible, for I/O benchmarks) unless given."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = "20240115", "101530"
    ds.AccessionNumber = "ACC-" + study_uid[-6:]
    ds.Modality = "CT"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StudyDescription = "CT THORAX"
    ds.SeriesDescription = f"AXIAL {series_number}"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", series_number, number
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = 1.0
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    rng = np.random.default_rng(seed if seed is not None else number)
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels is None:
        pixels = rng.integers(0, 4096, size=(frames, rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True, implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
             little_endian=True)
    return out.getvalue()


def phantom(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """A 12-bit image with the structure of a body section (soft tissue, lungs, bone, scanner
    noise), compressible as real images are: for codec benchmarks."""
    y, x = np.mgrid[-1:1:rows * 1j, -1:1:columns * 1j]
    image = np.full((rows, columns), 24.0)                                        # air
    image[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = 1064                            # soft tissue
    for side in (-0.4, 0.4):
        image[((x - side) / 0.3) ** 2 + (y / 0.45) ** 2 < 1] = 300                # lungs
    image[(x ** 2 + (y + 0.5) ** 2) < 0.01] = 2200                                # spine
    image += 40 * np.sin(x * 12) * np.cos(y * 9)                                  # texture
    image += np.random.default_rng(seed).normal(0, 8, (rows, columns))            # noise
    return np.clip(image, 0, 4095).astype(np.uint16)


def study(spec: StudySpec = StudySpec(), study_uid: str | None = None, patient_id: str = "PAT-1"):
    """Yield (study_uid, series_uid, sop_uid, bytes) for every instance of one study."""
    study_uid = study_uid or generate_uid()
    for s in range(1, spec.series + 1):
        series_uid = generate_uid()
        for n in range(1, spec.instances_per_series + 1):
            sop_uid = generate_uid()
            yield study_uid, series_uid, sop_uid, ct_instance(
                study_uid, series_uid, sop_uid, number=n, rows=spec.rows, columns=spec.columns,
                transfer_syntax=spec.transfer_syntax, patient_id=patient_id, series_number=s, seed=s * 100000 + n)


COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def measurement_report(study_uid: str, images: list[tuple[str, str]], measurements: int = 100,
                       sop_uid: str | None = None, text: str = "No acute findings.", **attributes: object) -> bytes:
    """A TID 1500-shaped Comprehensive SR: a title, observation context, an imaging measurements
    container with ``measurements`` groups (a finding code, a NUM in mm with its image
    reference, a tracking identifier), each ~5 content items, and a TEXT impression. ``images``
    are (series UID, SOP Instance UID) of CT images of the study, listed as evidence."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = COMPREHENSIVE_SR, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240115", "101530", "20240116", "083000"
    ds.AccessionNumber, ds.Modality, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "ACC-1", "SR", "1", 99, 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "PAT-1", "19700101", "F"
    ds.ReferringPhysicianName, ds.StudyDescription, ds.SeriesDescription = "Smith^John", "CT THORAX", "Measurements"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerifyingOrganization = "Radiologist^Ann", "Hospital"
    observer.VerificationDateTime = "20240116090000"
    ds.VerifyingObserverSequence = [observer]
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("126000", "DCM", "Imaging Measurement Report")]

    def item(relationship: str, kind: str, concept: Dataset, **values) -> Dataset:
        child = Dataset()
        child.RelationshipType, child.ValueType = relationship, kind
        child.ConceptNameCodeSequence = [concept]
        for keyword, value in values.items():
            setattr(child, keyword, value)
        return child

    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, images[0][1]
    groups = []
    for n in range(measurements):
        series_uid, image_uid = images[n % len(images)]
        measured = Dataset()
        measured.NumericValue = f"{10 + n % 37}.{n % 10}"
        measured.MeasurementUnitsCodeSequence = [_code("mm", "UCUM", "millimeter")]
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, image_uid
        num = item("CONTAINS", "NUM", _code("410668003", "SCT", "Length"), MeasuredValueSequence=[measured])
        num.ContentSequence = [item("INFERRED FROM", "IMAGE", _code("121112", "DCM", "Source of Measurement"),
                                    ReferencedSOPSequence=[ref])]
        group = item("CONTAINS", "CONTAINER", _code("125007", "DCM", "Measurement Group"), ContinuityOfContent="SEPARATE")
        group.ContentSequence = [
            item("HAS OBS CONTEXT", "TEXT", _code("112039", "DCM", "Tracking Identifier"), TextValue=f"Lesion {n + 1}"),
            item("CONTAINS", "CODE", _code("121071", "DCM", "Finding"),
                 ConceptCodeSequence=[_code("4147007", "SCT", "Mass")]),
            num,
        ]
        groups.append(group)
    measurements_container = item("CONTAINS", "CONTAINER", _code("126010", "DCM", "Imaging Measurements"),
                                  ContinuityOfContent="SEPARATE")
    measurements_container.ContentSequence = groups
    ds.ContentSequence = [
        item("HAS CONCEPT MOD", "CODE", _code("121049", "DCM", "Language of Content Item and Descendants"),
             ConceptCodeSequence=[_code("en-US", "RFC5646", "English (United States)")]),
        item("HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name"), PersonName="Radiologist^Ann"),
        measurements_container,
        item("CONTAINS", "TEXT", _code("121073", "DCM", "Impression"), TextValue=text),
    ]
    evidence_series: dict[str, list] = {}
    for series_uid, image_uid in images:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CT_IMAGE_STORAGE, image_uid
        evidence_series.setdefault(series_uid, []).append(ref)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = []
    for series_uid, refs in evidence_series.items():
        series = Dataset()
        series.SeriesInstanceUID, series.ReferencedSOPSequence = series_uid, refs
        study.ReferencedSeriesSequence.append(series)
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
# (ffmpeg codec and format) of each stored form a test video takes, and its transfer syntax.
VIDEO_FORMS = {
    "h264-mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4"],
                 "1.2.840.10008.1.2.4.102"),
    "h264-mp4-index-last": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"], "1.2.840.10008.1.2.4.102"),
    "h264-ts": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"], "1.2.840.10008.1.2.4.102"),
    "hevc-mp4": (["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error", "-tag:v", "hvc1",
                  "-movflags", "+faststart", "-f", "mp4"], "1.2.840.10008.1.2.4.107"),
    "mpeg2-ps": (["-c:v", "mpeg2video", "-pix_fmt", "yuv420p", "-f", "vob"], "1.2.840.10008.1.2.4.100"),
}


def video_stream(form: str = "h264-mp4", seconds: float = 2.0, width: int = 320, height: int = 240,
                 rate: int = 25) -> bytes:
    """A test pattern video (ffmpeg's testsrc2: a moving picture with a frame counter) in one of
    VIDEO_FORMS, made by Debian's ffmpeg."""
    import subprocess
    import tempfile

    options, _ = VIDEO_FORMS[form]
    with tempfile.NamedTemporaryFile(suffix=".video") as out:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={width}x{height}:rate={rate}", "-t", str(seconds), *options, "-y", out.name],
                       check=True, timeout=120)
        return open(out.name, "rb").read()


def video_instance(study_uid: str, series_uid: str, form: str = "h264-mp4", seconds: float = 2.0,
                   width: int = 320, height: int = 240, rate: int = 25, stream: bytes | None = None) -> bytes:
    """A Video Endoscopic Image instance holding a ``video_stream`` in one fragment, as PS3.5
    8.2.5–8.2.8 ask (a YBR_PARTIAL_420 description, the frame count and rate of the stream)."""
    from pydicom.encaps import encapsulate

    stream = stream if stream is not None else video_stream(form, seconds, width, height, rate)
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = VIDEO_ENDOSCOPIC, sop_uid
    meta.TransferSyntaxUID = VIDEO_FORMS[form][1]
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = VIDEO_ENDOSCOPIC, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.Modality, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = \
        "20240115", "101530", "ES", "1", 1, 1
    ds.PatientName, ds.PatientID, ds.AccessionNumber, ds.ReferringPhysicianName = "Doe^Jane", "PAT-1", "ACC-V", ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = \
        height, width, 8, 8, 7, 0
    ds.NumberOfFrames = round(seconds * rate)
    ds.FrameTime, ds.CineRate = 1000 / rate, rate
    ds.FrameIncrementPointer = 0x00181063
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


# -- structured reports of hostile shapes (storage.structure's bounds) ----------------------

def flat_report(items: int, syntax: str = ExplicitVRLittleEndian, undefined: bool = False) -> bytes:
    """An SR of ``items`` TEXT content items in one container, each with its concept name: the
    shape of the 100,000-item report (4.9 MB) that took 15 s and 250 MiB to store."""
    ds = sr_dataset(syntax)
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "121071", "DCM", "Finding"
    children = []
    for n in range(items):
        child = Dataset()
        child.RelationshipType, child.ValueType, child.TextValue = "CONTAINS", "TEXT", f"{n}"
        child.ConceptNameCodeSequence = [name]
        children.append(child)
    ds.ContentSequence = children
    return written(ds, undefined)


def many_items_report(items: int) -> bytes:
    """flat_report of ``items`` items (explicit VR, undefined lengths), made by repeating the bytes
    of one: pydicom would take a minute to write 50,000."""
    one = flat_report(1, undefined=True)
    sequence = one.index(b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff") + 12
    end = one.rindex(b"\xfe\xff\xdd\xe0")   # the Content Sequence is the last element
    return one[:sequence] + one[sequence:end] * items + one[end:]


def deep_report(depth: int, syntax: str = ExplicitVRLittleEndian, undefined: bool = False) -> bytes:
    ds = sr_dataset(syntax)
    inner = Dataset()
    inner.RelationshipType, inner.ValueType, inner.TextValue = "CONTAINS", "TEXT", "deep"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.RelationshipType, outer.ValueType = "CONTAINS", "CONTAINER"
        outer.ContentSequence = [inner]
        inner = outer
    ds.ContentSequence = [inner]
    return written(ds, undefined)


def sr_dataset(syntax: str) -> Dataset:
    """A Comprehensive SR data set with its identity and no content, written in ``syntax``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID, ds.file_meta.MediaStorageSOPClassUID = syntax, COMPREHENSIVE_SR
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.ValueType = "SR", "P-SR", "CONTAINER"
    return ds


def written(ds: Dataset, undefined: bool) -> bytes:
    """``ds`` as a Part 10 file, its sequences and items of undefined length or not."""
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
            for item in elem.value:
                item.is_undefined_length_sequence_item = undefined
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True, little_endian=ds.file_meta.TransferSyntaxUID != ExplicitVRBigEndian,
                   implicit_vr=ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian)
    return out.getvalue()
