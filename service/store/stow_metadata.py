"""STOW-RS of metadata and bulk data (PS3.18 §10.5): DICOM JSON or Native DICOM Model XML
parts, then bulk data parts named by Content-Location, made into Part 10 instances.

Metadata parts come first (a JSON array or object a part; one XML document a part); every
other part is bulk data and must carry a Content-Location, which BulkDataURIs (or
``<BulkData uri=…>``) name. Pixel Data whose part is a compressed image (``image/jpeg``,
``image/jls``, ``image/jp2``, ``image/jpx``, ``image/dicom-rle``, ``video/mpeg``,
``video/mp4``) becomes encapsulated Pixel Data in the syntax the part says or its stream
does; its description (rows, columns…) is taken from the metadata and, where absent, from
the stream's own header — a contradiction fails the instance. Everything else is the
value as sent (``application/octet-stream``, ``application/pdf`` for an encapsulated
document). Each instance is built whole, then stored like any other; one that cannot be
built fails alone, with its reason.
"""
from __future__ import annotations

import errno
import tempfile
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from pydicom.valuerep import VR

from storage import StoreOutcome
from storage.archive import file_sha256
from storage.dataset import reason
from storage.status import FailureReason
from storage.uids import is_valid_uid
from transcode.streams import PIXEL_MEDIA_TYPES, StreamError, describe_stream
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN

from ..wire.dicom_json import MalformedDataset, check_model
from ..wire.dicom_xml import xml_to_json
from ..errors import BadRequest
from ..wire.media import DICOM_JSON, DICOM_XML, LEGACY_MEDIA_TYPES, MalformedMediaType, parse_media_type
from ..wire.tags import KEY

# This implementation, as file meta information names it (PS3.7 D.3.3.3): a UUID-derived UID.
IMPLEMENTATION_CLASS_UID = "2.25.259316549367823651047307187813049553043"
IMPLEMENTATION_VERSION = "DICOMWEB_ARCH_1"
# A metadata part is parsed whole, and DICOM JSON takes some 20 times its size as Python objects:
# 2 MiB (the per-frame groups of a ~1,000-frame instance) stays within a worker's budget.
METADATA_LIMIT = 2 << 20


@dataclass
class BodyPart:
    media_type: str            # lower case, without parameters
    transfer_syntax: str | None
    location: str | None
    body: BinaryIO             # spooled; read whole when used


def instances(parts: list[BodyPart], study: str | None, spool_dir, spool_memory: int,
              max_bulk_bytes: int = 1 << 30) -> Iterator:
    """Each instance the metadata parts describe, as a (spooled Part 10 file, sha256) pair or
    a failed StoreOutcome. BadRequest when the request itself is malformed. An instance is built
    in memory: the bulk data it names (each part read once, however often named) may not
    exceed ``max_bulk_bytes`` (0xA700 beyond)."""
    metadata = [p for p in parts if p.media_type in (DICOM_JSON, DICOM_XML)]
    bulk = [p for p in parts if p.media_type not in (DICOM_JSON, DICOM_XML)]
    if not metadata:
        raise BadRequest("the request has no metadata part (application/dicom+json or application/dicom+xml)")
    if parts.index(metadata[-1]) > len(metadata) - 1:
        raise BadRequest("metadata parts come before bulk data parts (PS3.18 §10.5.1.2)")
    unnamed = [p for p in bulk if not p.location]
    if unnamed:
        raise BadRequest(f"a bulk data part ({unnamed[0].media_type}) has no Content-Location")
    by_location = {p.location: p for p in bulk}
    for part in metadata:
        try:
            models = _models(part)
        except MalformedDataset as exc:
            yield StoreOutcome(None, None, failure=FailureReason.CANNOT_UNDERSTAND, message=str(exc))
            continue
        for model in models:
            try:
                ds = build(model, by_location, study, max_bulk_bytes)
            except _Refused as refused:
                yield StoreOutcome(model_uid(model, KEY.SOPClassUID), model_uid(model, KEY.SOPInstanceUID),
                                   failure=refused.reason, message=refused.message)
                continue
            spool = tempfile.SpooledTemporaryFile(max_size=spool_memory, dir=spool_dir)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds.save_as(spool, enforce_file_format=True)
            except Exception as exc:   # a value its VR cannot hold (US 70000…), as pydicom says it; or a full disk
                spool.close()
                full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
                yield StoreOutcome(model_uid(model, KEY.SOPClassUID), model_uid(model, KEY.SOPInstanceUID),
                                   failure=FailureReason.OUT_OF_RESOURCES if full else FailureReason.CANNOT_UNDERSTAND,
                                   message="no space is left on this server to build the instance" if full else
                                   f"the metadata cannot be written as DICOM: {reason(exc)}")
                continue
            spool.seek(0)
            with spool:
                yield spool, file_sha256(spool)


def _models(part: BodyPart) -> list[dict]:
    data = part.body.read(METADATA_LIMIT + 1)
    if len(data) > METADATA_LIMIT:
        raise MalformedDataset(f"a metadata part is larger than {METADATA_LIMIT} bytes")
    if part.media_type == DICOM_XML:
        return [xml_to_json(data)]
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedDataset(f"the JSON metadata cannot be read: {exc}") from None
    models = parsed if isinstance(parsed, list) else [parsed]
    if not models or not all(isinstance(m, dict) for m in models):
        raise MalformedDataset("JSON metadata is a DICOM JSON object or an array of them")
    for model in models:
        check_model(model)
    return models


def model_uid(model: dict, tag: str) -> str | None:
    values = model.get(tag, {}).get("Value") if isinstance(model.get(tag), dict) else None
    return values[0] if values and isinstance(values[0], str) else None


class _Refused(Exception):
    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def build(model: dict, bulk: dict[str, BodyPart], study: str | None, max_bulk_bytes: int = 1 << 30) -> Dataset:
    """One Part 10 data set from its DICOM JSON object and the bulk data parts."""
    model = dict(model)
    pixels = model.pop(KEY.PixelData, None)
    pixel_part = None
    if pixels is not None and "BulkDataURI" in pixels:
        pixel_part = _part(bulk, pixels["BulkDataURI"])
        if pixel_part.media_type not in PIXEL_MEDIA_TYPES:
            model[KEY.PixelData] = pixels   # native pixels (octet-stream): the value as sent
            pixel_part = None
    elif pixels is not None:
        model[KEY.PixelData] = pixels

    values: dict[int, bytes] = {}   # each part read once, however many attributes name it

    def bulk_value(tag: str, vr: str, uri: str) -> bytes:
        part = _part(bulk, uri)
        if id(part) not in values:
            size = part.body.seek(0, 2)
            if size + sum(map(len, values.values())) > max_bulk_bytes:
                raise _Refused(FailureReason.OUT_OF_RESOURCES, f"the bulk data of the instance is more than the "
                               f"{max_bulk_bytes} bytes one instance may be built from (DICOMWEB_TRANSCODE_MAX_BYTES)")
            part.body.seek(0)
            values[id(part)] = part.body.read()
        return values[id(part)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = Dataset.from_json(model, bulk_data_uri_handler=bulk_value)
        except _Refused:
            raise
        except Exception as exc:   # pydicom's many ways of refusing a value
            raise _Refused(FailureReason.CANNOT_UNDERSTAND, f"the metadata cannot be read: {reason(exc)}") from None
    syntax = EXPLICIT_VR_LITTLE_ENDIAN
    if pixel_part is not None:
        syntax = _encapsulate(ds, pixel_part)
    _identify(ds, study)
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"   # JSON and XML text is Unicode
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    return ds


def _part(bulk: dict[str, BodyPart], uri: str) -> BodyPart:
    """The part a BulkDataURI names: by its Content-Location, exactly or as its last segments
    (clients send absolute URIs for relative locations, and the other way round)."""
    found = bulk.get(uri)
    if found is None:
        tails = [p for location, p in bulk.items() if uri.endswith(location) or location.endswith(uri)]
        found = tails[0] if len(tails) == 1 else None
    if found is None:
        raise _Refused(FailureReason.CANNOT_UNDERSTAND, f"no part has the Content-Location {uri[:120]!r}")
    found.body.seek(0)
    return found


_DESCRIPTION = [("Rows", "rows"), ("Columns", "columns"), ("SamplesPerPixel", "samples_per_pixel"),
                ("BitsStored", "bits_stored"), ("BitsAllocated", "bits_allocated"),
                ("PhotometricInterpretation", "photometric_interpretation")]


def _encapsulate(ds: Dataset, part: BodyPart) -> str:
    """Pixel Data from a compressed image part: one fragment a frame; the Image Pixel attributes
    the metadata lacks are read from the stream, and must agree with those it has."""
    try:
        image = describe_stream(part.media_type, part.body.read(), part.transfer_syntax)
    except StreamError as exc:
        raise _Refused(FailureReason.CANNOT_UNDERSTAND, f"the {part.media_type} part: {exc}") from None
    for keyword, field in _DESCRIPTION:
        found = getattr(image, field)
        if found is None:
            if keyword not in ds:
                raise _Refused(FailureReason.DATASET_MISMATCH,
                               f"{keyword} is needed: the {part.media_type} stream does not say it")
            continue
        if keyword in ds and ds[keyword].value not in (None, "") and str(ds[keyword].value) != str(found):
            if keyword == "PhotometricInterpretation" and image.photometric_interpretation.startswith("YBR") \
                    and str(ds[keyword].value).startswith("YBR"):
                continue   # YCbCr either way: the metadata's precise form stands
            raise _Refused(FailureReason.DATASET_MISMATCH,
                           f"{keyword} is {ds[keyword].value} in the metadata but {found} in the "
                           f"{part.media_type} stream")
        if keyword not in ds or ds[keyword].value in (None, ""):
            setattr(ds, keyword, found)
    if "HighBit" not in ds:
        ds.HighBit = int(ds.BitsStored) - 1
    ds.setdefault("PixelRepresentation", 0)
    if int(ds.SamplesPerPixel) > 1:
        ds.setdefault("PlanarConfiguration", 0)
    frames = image.frames
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if len(frames) not in (1, count) and not image.transfer_syntax.startswith("1.2.840.10008.1.2.4.10"):
        raise _Refused(FailureReason.DATASET_MISMATCH,
                       f"NumberOfFrames is {count} but the {part.media_type} part holds {len(frames)} frame(s)")
    if len(frames) > 1 and "NumberOfFrames" not in ds:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = VR.OB
    ds["PixelData"].is_undefined_length = True
    return image.transfer_syntax


def _identify(ds: Dataset, study: str | None) -> None:
    """The UIDs an instance needs: SOP Class given; Study given (or the URL's); Series and SOP
    Instance made when absent (the response returns them)."""
    if not is_valid_uid(str(ds.get("SOPClassUID", ""))):
        raise _Refused(FailureReason.DATASET_MISMATCH, "SOPClassUID is missing or malformed")
    if "StudyInstanceUID" not in ds and study is not None:
        ds.StudyInstanceUID = study
    if not is_valid_uid(str(ds.get("StudyInstanceUID", ""))):
        raise _Refused(FailureReason.DATASET_MISMATCH, "StudyInstanceUID is missing or malformed")
    for keyword in ("SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in ds:
            setattr(ds, keyword, generate_uid(prefix=None))
        elif not is_valid_uid(str(ds[keyword].value)):
            raise _Refused(FailureReason.DATASET_MISMATCH, f"{keyword} is malformed")


def body_part(headers: dict[str, str], body: BinaryIO) -> BodyPart:
    """A received part from its headers (lower-case names)."""
    declared = headers.get("content-type", "application/octet-stream")
    try:
        media = parse_media_type(declared)
    except MalformedMediaType as exc:
        raise BadRequest(f"a part's Content-Type: {exc}") from None
    media_type = LEGACY_MEDIA_TYPES.get(media.type, media.type)
    return BodyPart(media_type, media.param("transfer-syntax"), headers.get("content-location"), body)
