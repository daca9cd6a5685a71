"""The archive: one blob store and one catalog, kept consistent.

Ingest writes the blob first and commits the catalog row after it, so a reader
never finds a row without its blob. A crash between the two leaves an orphan
blob, which ``sweep`` removes once it is older than a grace period.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import BinaryIO

from .blobs import BlobReader, BlobStore
from .catalog import Catalog, StoredInstance
from .dataset import RejectedInstance, read_header
from .status import FailureReason
from .uids import blob_key

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one instance offered for storage."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: FailureReason | None = None
    message: str = ""

    @property
    def stored(self) -> bool:
        return self.failure is None


class Archive:
    def __init__(self, blobs: BlobStore, catalog: Catalog, replace_duplicates: bool = False) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self.replace_duplicates = replace_duplicates

    def store(self, fp: BinaryIO, sha256: str, expected_study: str | None = None) -> StoreOutcome:
        """Store one Part 10 instance read from the seekable ``fp``.

        ``sha256`` is the hex digest of its bytes, computed while it was received.
        """
        try:
            header = read_header(fp)
        except RejectedInstance as exc:
            return StoreOutcome(exc.sop_class, exc.sop_instance, failure=exc.reason, message=exc.message)
        ids = dict(sop_class_uid=header.sop_class_uid, sop_instance_uid=header.sop_instance_uid,
                   study_uid=header.study_uid, series_uid=header.series_uid)
        if expected_study is not None and header.study_uid != expected_study:
            return StoreOutcome(**ids, failure=FailureReason.DATASET_MISMATCH,
                                message=f"Study Instance UID {header.study_uid} does not match the request URL")
        key = blob_key(header.study_uid, header.series_uid, header.sop_instance_uid, sha256)
        fp.seek(0)
        try:
            size = self.blobs.put(key, fp)
        except OSError as exc:
            log.exception("blob write failed for %s", header.sop_instance_uid)
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            return StoreOutcome(**ids, failure=FailureReason.OUT_OF_RESOURCES if full else FailureReason.PROCESSING_FAILURE,
                                message="storage is full" if full else "the blob store could not write the instance")
        except Exception:
            log.exception("blob write failed for %s", header.sop_instance_uid)
            return StoreOutcome(**ids, failure=FailureReason.PROCESSING_FAILURE,
                                message="the blob store could not write the instance")
        try:
            registration = self.catalog.register(header, size, sha256, key, replace=self.replace_duplicates)
        except Exception:
            # The blob stays as an orphan for the sweep: it may be the very blob
            # an earlier, identical upload of this instance is catalogued with.
            log.exception("catalog write failed for %s", header.sop_instance_uid)
            return StoreOutcome(**ids, failure=FailureReason.PROCESSING_FAILURE,
                                message="the catalog could not record the instance")
        if registration.outcome in ("created", "identical"):
            return StoreOutcome(**ids)
        if registration.outcome == "replaced":
            if registration.previous_blob_key and registration.previous_blob_key != key:
                self._delete_quietly(registration.previous_blob_key)
            return StoreOutcome(**ids)
        # Refused: the blob we wrote has a key no catalog row can point at.
        self._delete_quietly(key)
        reason = (FailureReason.DUPLICATE_SOP_INSTANCE if registration.outcome == "conflict"
                  else FailureReason.DATASET_MISMATCH)
        return StoreOutcome(**ids, failure=reason, message=registration.detail)

    def instances(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uid: str | None = None) -> list[StoredInstance]:
        return self.catalog.instances(study_uid, series_uid, sop_instance_uid)

    def open(self, instance: StoredInstance) -> BlobReader:
        return self.blobs.open(instance.blob_key)

    def sweep(self, grace_seconds: float = 3600.0, now: float | None = None) -> int:
        """Delete blobs older than the grace period that no catalog row references."""
        import time

        cutoff = (time.time() if now is None else now) - grace_seconds
        removed = 0
        batch: list[str] = []

        def flush() -> int:
            orphans = self.catalog.unreferenced(batch)
            for key in orphans:
                self._delete_quietly(key)
            batch.clear()
            return len(orphans)

        for key, modified in self.blobs.list():
            if modified < cutoff:
                batch.append(key)
                if len(batch) >= SWEEP_BATCH:
                    removed += flush()
        removed += flush()
        stale = getattr(self.blobs, "remove_stale_temporaries", None)
        if stale is not None:
            removed += stale(grace_seconds)
        return removed

    def _delete_quietly(self, key: str) -> None:
        try:
            self.blobs.delete(key)
        except Exception:
            log.exception("could not delete blob %s; the sweep will retry", key)
