"""C-MOVE and C-GET of the Query/Retrieve service (PS3.4 C.4.2, C.4.3): which instances an
identifier names, and each one sent from a file in a transfer syntax the receiving association
accepted for its class: as stored when it may be, else converted through the same access layer
as WADO-RS (``service.access.instances.convert``), decoded to Explicit or Implicit VR Little
Endian first, recompressed where the receiver takes only a compressed syntax we can write.

One instance is prepared at a time (a file in the spool, or the blob's own file), and pynetdicom
sends it from that file in fragments: memory stays flat whatever the size of the study.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Callable, Iterable, Sequence

from pydicom import Dataset

from storage import Archive, StoredInstance
from storage.dataset import InflationLimit
from transcode import ConversionError, can_transcode
from transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

from ..access.instances import PlannedPart, convert, pixel_descriptions
from ..limits import TranscodeLimits
from .find import LEVELS, BadIdentifier, text_of

log = logging.getLogger(__name__)

MAX_SUBOPERATIONS = 65535   # Number of Remaining Sub-operations is a US
PREFERRED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


class NotSendable(Exception):
    """An instance the receiving association cannot take in any syntax it accepted for its class,
    or whose data cannot be converted to one: a failed sub-operation."""


def requested_instances(archive: Archive, identifier: Dataset, model: str,
                        studies_of_patient: Callable[[str], list[str]]) -> list[StoredInstance]:
    """The instances a C-MOVE/C-GET identifier names (hierarchical: the unique keys of the levels
    above the Query/Retrieve Level must be given, one value each; the level's own may be a list).
    ``model`` is "patient" or "study" (the information model's root)."""
    level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")).strip().upper())
    if level is None or (level == "patient" and model != "patient"):
        raise BadIdentifier(0xA900, "Query/Retrieve Level (0008,0052) is not one this model retrieves at")

    def uids(keyword: str, many: bool) -> list[str]:
        values = [v for v in text_of(identifier.get(keyword)).split("\\") if v]
        if not values or (not many and len(values) > 1):
            raise BadIdentifier(0xA900, f"{keyword} must be given{' (one value)' if not many else ''} to retrieve "
                                        f"at {identifier.QueryRetrieveLevel} level")
        return values

    found: list[StoredInstance] = []
    if level == "patient":
        for patient in uids("PatientID", many=False):
            for study in studies_of_patient(patient):
                found += archive.instances(study)
    elif level == "study":
        for study in uids("StudyInstanceUID", many=True):
            found += archive.instances(study)
    elif level == "series":
        [study] = uids("StudyInstanceUID", many=False)
        for series in uids("SeriesInstanceUID", many=True):
            found += archive.instances(study, series)
    else:
        [study] = uids("StudyInstanceUID", many=False)
        [series] = uids("SeriesInstanceUID", many=False)
        for instance in uids("SOPInstanceUID", many=True):
            found += archive.instances(study, series, instance)
    if len(found) > MAX_SUBOPERATIONS:
        raise BadIdentifier(0xA702, f"{len(found)} instances: more than the {MAX_SUBOPERATIONS} sub-operations "
                                    "one request can count; retrieve them by series")
    return found


def syntax_for(stored: str, accepted: Sequence[str], can_convert: Callable[[str], bool]) -> str | None:
    """The syntax to send an instance stored in ``stored`` in, of those the receiver ``accepted``
    for its class: as stored; else uncompressed (Explicit, then Implicit VR Little Endian); else
    the first other accepted one it can be converted to; None when none."""
    if stored in accepted:
        return stored
    for syntax in [s for s in PREFERRED if s in accepted] + [s for s in accepted if s not in PREFERRED]:
        if can_convert(syntax):
            return syntax
    return None


class InstanceToSend(Dataset):
    """What a C-MOVE/C-GET handler yields for one instance: a data set naming it (pynetdicom lists
    its SOP Instance UID when it fails), made into a file in an accepted syntax only when sent
    (service.dimse.bounds.send_instances_from_files)."""

    def __init__(self, instance: StoredInstance, prepare: Callable[[Sequence[str]], "PreparedFile"]) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self._stored, self._prepare = instance, prepare
        self.store_status: int | None = None   # the receiver's answer, once sent (None: not sent, or failed)

    def file_for(self, accepted: Sequence[str]) -> "PreparedFile":
        return self._prepare(accepted)


class PreparedFile:
    """An instance as a Part 10 file in the syntax it is sent in; a file of our own is removed
    when done with."""

    def __init__(self, path: str, syntax: str, ours: bool) -> None:
        self.path, self.syntax, self.ours = path, syntax, ours

    def __enter__(self) -> "PreparedFile":
        return self

    def __exit__(self, *_) -> None:  # noqa: ANN002
        if self.ours:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class Sender:
    """Prepares the instances of one retrieve from ``archive``, within ``limits``."""

    def __init__(self, archive: Archive, limits: TranscodeLimits, spool_dir: str) -> None:
        self.archive, self.limits, self.spool_dir = archive, limits, spool_dir

    def items(self, instances: Iterable[StoredInstance]) -> list[InstanceToSend]:
        return [InstanceToSend(instance, lambda accepted, i=instance: self.prepare(i, accepted)) for instance in instances]

    def prepare(self, instance: StoredInstance, accepted: Sequence[str]) -> PreparedFile:
        stored = instance.transfer_syntax_uid
        pixels = None
        if stored not in accepted:
            pixels = pixel_descriptions(self.archive, [instance]).get(instance)

        def can_convert(syntax: str) -> bool:
            held = max(instance.size, pixels.native_length if pixels is not None else 0)
            return can_transcode(stored, syntax, pixels) and self.limits.fits(held)

        syntax = syntax_for(stored, accepted, can_convert)
        if syntax is None:
            raise NotSendable(f"{instance.sop_instance_uid} is stored in {stored}, which the receiver did not accept "
                              f"for {instance.sop_class_uid}, and cannot be converted to what it did ({', '.join(accepted)})")
        if syntax == stored:
            local = self.archive.local_path(instance)
            if local is not None:
                return PreparedFile(local, syntax, ours=False)
            reader = self.archive.open(instance)   # a store without files (S3): copied to the spool
            try:
                return self._spooled(iter(lambda: reader.read(1 << 20), b""), syntax)
            finally:
                reader.close()
        try:
            converted = convert(self.archive, PlannedPart(instance, syntax), self.limits, before_answer=False)
        except (ConversionError, InflationLimit) as exc:   # the data's; any other is ours
            raise NotSendable(f"{instance.sop_instance_uid} cannot be converted to {syntax}: {exc}") from None
        with converted:
            return self._spooled(iter(lambda: converted.read(1 << 20), b""), syntax)

    def _spooled(self, chunks: Iterable[bytes], syntax: str) -> PreparedFile:
        handle, path = tempfile.mkstemp(suffix=".dcm", prefix="retrieve-", dir=self.spool_dir)
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
        except BaseException:
            os.unlink(path)
            raise
        return PreparedFile(path, syntax, ours=True)

