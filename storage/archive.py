"""The archive: one blob store and one catalog, kept consistent.

Ingest writes the blob first and commits the catalog row after it, so a reader
never finds a row without its blob. A crash between the two leaves an orphan
blob, which ``sweep`` removes once it is older than a grace period.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import io
import logging
import shutil
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

from .blobs import CHUNK_SIZE, BlobReader, BlobStore, BodyPiece, body_pieces, iter_chunks
from .catalog import Catalog, InstanceDetails, Outcome, PendingInstance, Registration, StoredInstance
from .dataset import (
    DEFLATED, EXPLICIT_VR_LITTLE_ENDIAN, CappedReads, InstanceHeader, RejectedInstance, inflated_copy, read_header,
)
from .search import Query
from .status import FailureReason
from .structure import MAX_SEQUENCE_ITEMS
from .uids import blob_key

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
METADATA_CHUNK = 500
PENDING_GRACE = 7 * 86400.0   # a store in progress for longer than this has died (its mark is stale)


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
    def __init__(self, blobs: BlobStore, catalog: Catalog, replace_duplicates: bool = False,
                 max_inflated_bytes: int = 1 << 30, spool_memory: int = 16 << 20,
                 spool_dir: str | os.PathLike | None = None, max_sequence_items: int = MAX_SEQUENCE_ITEMS) -> None:
        self._blobs = blobs
        self._catalog = catalog
        self.replace_duplicates = replace_duplicates
        self.max_inflated_bytes = max_inflated_bytes   # of a deflated instance's data set, read or stored
        self.max_sequence_items = max_sequence_items   # of an instance stored (storage.structure)
        self.spool_memory, self.spool_dir = spool_memory, spool_dir   # of a blob made seekable (spooled)

    @property
    def catalog(self) -> Catalog:
        """The catalog, for what keeps its own tables there: viewer sessions, rejected instances,
        Storage Commitment results."""
        return self._catalog

    def batch(self, may_replace: bool = True) -> "StoreBatch":
        """A group of instances whose catalog rows are committed together; with ``may_replace``
        False, this batch never replaces stored content, whatever the archive's setting."""
        return StoreBatch(self, self.replace_duplicates and may_replace)

    def store(self, fp: BinaryIO, sha256: str, expected_study: str | None = None) -> StoreOutcome:
        """Store one Part 10 instance read from the seekable ``fp`` (``sha256``: hex digest of its bytes)."""
        batch = self.batch()
        batch.add(fp, sha256, expected_study)
        return batch.commit()[0]

    def keep_copy(self, fp: BinaryIO, origin: str, cache_bytes: int | None = None) -> StoreOutcome:
        """Store an instance retrieved from the upstream ``origin`` (a facade's ``keep``), marked as
        its copy; with ``cache_bytes``, evict that origin's oldest copies beyond that size.
        ``fp`` is left at its start."""
        batch = self.batch()
        batch.add(fp)
        [outcome] = batch.commit()
        fp.seek(0)
        if outcome.stored:
            self._catalog.mark_upstream(outcome.sop_instance_uid, origin)
            if cache_bytes is not None:
                for key in self._catalog.evict(origin, int(cache_bytes)):
                    _delete_quietly(self._blobs, key)
        return outcome

    def instances(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uid: str | None = None) -> list[StoredInstance]:
        return self._catalog.instances(study_uid, series_uid, sop_instance_uid)

    def open(self, instance: StoredInstance) -> BlobReader:
        return self._blobs.open(instance.blob_key)

    def receiving_file(self) -> BinaryIO | None:
        """A file to receive an instance into that storing it moves into place instead of copying
        (a disk store's, storage.blobs.Staged); None where the blob store has none."""
        staged = getattr(self._blobs, "staged", None)
        return staged() if staged is not None else None

    def read(self, instance: StoredInstance, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of the instance's blob from ``start`` (the rest of it when None), in memory."""
        return b"".join(iter_chunks(self._blobs.open(instance.blob_key, start, length)))

    def local_path(self, instance: StoredInstance) -> str | None:
        """The file of the instance's blob, where the store keeps files (storage.blobs)."""
        return self._blobs.local_path(instance.blob_key)

    def ranged(self, instance: StoredInstance) -> BinaryIO:
        """The instance's blob as a seekable file whose reads are ranged reads of the store (64 KiB
        at least): for walking a data set's headers and seeking over its large values, without the
        copy ``spooled`` makes. Not inflated: for instances that are not deflated."""
        return io.BufferedReader(_RangedBlob(self, instance), RANGED_READ)

    def body(self, instance: StoredInstance, start: int = 0, length: int | None = None) -> Iterator[BodyPiece]:
        """The instance's blob (or ``length`` bytes of it from ``start``) as pieces of a response
        body (storage.blobs.body_pieces): read, or handed to the socket, as iterated."""
        return body_pieces(self._blobs.open(instance.blob_key, start, length))

    def search(self, query: Query) -> tuple[list[dict], bool]:
        """A QIDO-RS query's page of results, and whether more matched (storage.search)."""
        return self._catalog.search(query)

    def count(self, query: Query) -> int:
        return self._catalog.count(query)

    def readiness(self) -> dict[str, bool]:
        """Whether the catalog and the blob store answer now (whatever their drivers raise)."""
        checks = {}
        for name, ping in (("catalog", self._catalog.ping), ("store", self._blobs.ping)):
            try:
                ping()
                checks[name] = True
            except Exception:
                checks[name] = False
        return checks

    def audit(self) -> tuple[int, list[int], list[str]]:
        """(catalog rows, pks of rows whose blob is lost, blob keys no row names): ``dicomweb check``."""
        lost: list[int] = []
        referenced: set[str] = set()
        rows = 0
        for batch in self._catalog.blob_references():
            rows += len(batch)
            for pk, key in batch:
                referenced.add(key)
                if not self._blobs.exists(key):
                    lost.append(pk)
        return rows, lost, [key for key, _ in self._blobs.list() if key not in referenced]

    def forget(self, pks: Sequence[int]) -> None:
        """Remove the rows of instances whose blobs are lost, keeping their studies' counts right."""
        self._catalog.forget(pks)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_instance_uid: str | None = None) -> int:
        """Delete a study, series or instance: invisible once the catalog commits, its blobs removed
        right after (those that cannot be now are left doomed, for ``remove_doomed`` to retry).
        How many instances were deleted (0: none matched)."""
        count = self._catalog.delete(study_uid, series_uid, sop_instance_uid)
        if count:
            self.remove_doomed()
        return count

    def intact(self, instance: StoredInstance) -> bool:
        """Whether the instance's blob is there and its bytes still have the digest recorded when it
        was stored (a Storage Commitment commits to nothing less)."""
        digest = hashlib.sha256()
        try:
            reader = self.open(instance)
            try:
                for chunk in iter_chunks(reader):
                    digest.update(chunk)
            finally:
                reader.close()
        except Exception:   # missing, or the store is away: not committed, whatever the cause
            log.warning("the blob of %s cannot be read to verify it", instance.sop_instance_uid, exc_info=True)
            return False
        return hmac.compare_digest(digest.hexdigest(), instance.sha256)

    def reject(self, found: Sequence[StoredInstance], reason: str, note: str) -> int:
        """Hide ``found`` (a Rejection Note names them), keeping their blobs until purged."""
        return self._catalog.reject(found, reason, note)

    def purge_rejected(self, before: float) -> int:
        """Remove for good the instances rejected before ``before`` (unix time); how many."""
        count = self._catalog.purge_rejected(before)
        while self.remove_doomed():
            pass
        return count

    def remove_doomed(self, limit: int = 1000, pending_grace: float = PENDING_GRACE) -> int:
        """Remove up to ``limit`` blobs of deleted instances; how many went. One a row points at
        again (stored anew with the same content) is kept; one under a directory a store in
        progress has marked waits for the next call."""
        removable = sorted(self._catalog.removable(self._catalog.doomed(limit), pending_grace))
        try:
            failed = set(self._blobs.delete_many(removable))
        except Exception:
            log.exception("could not remove the blobs of deleted instances; they stay doomed")
            failed = set(removable)
        gone = [key for key in removable if key not in failed]
        if gone:
            self._catalog.forget_doomed(gone)
        return len(gone)

    def metadata(self, found: Sequence[StoredInstance]) -> Iterator[bytes]:
        """Each instance's DICOM JSON, read in chunks so memory stays flat in their number.

        An instance stored before metadata was kept has it made from its blob now,
        and recorded, so the archive backfills itself as it is used.
        """
        for start in range(0, len(found), METADATA_CHUNK):
            chunk = found[start:start + METADATA_CHUNK]
            stored = self._catalog.metadata(chunk)
            for instance in chunk:
                text = stored.get(instance.pk)
                yield text if text is not None else self.backfill_metadata(instance)

    @contextmanager
    def spooled(self, instance: StoredInstance) -> Iterator[BinaryIO]:
        """The instance's blob as a seekable file (pydicom needs one; S3 bodies are not),
        in memory up to ``spool_memory`` bytes, in ``spool_dir`` beyond; its reads are capped at
        what is left of it, as a damaged length after Pixel Data was never read by STOW."""
        with tempfile.SpooledTemporaryFile(max_size=self.spool_memory, dir=self.spool_dir) as spool:
            reader = self.open(instance)
            try:
                shutil.copyfileobj(reader, spool, CHUNK_SIZE)
            finally:
                reader.close()
            spool.seek(0)
            yield CappedReads(spool)

    @contextmanager
    def readable(self, instance: StoredInstance) -> Iterator[tuple[BinaryIO, str]]:
        """The instance as a seekable file pydicom reads without inflating it whole in memory, and
        the syntax that file is in: a deflated instance as its Explicit VR Little Endian copy
        (within ``max_inflated_bytes``: InflationLimit beyond), any other as stored."""
        if instance.transfer_syntax_uid == DEFLATED:
            with self.inflated(instance) as copy:
                yield copy, EXPLICIT_VR_LITTLE_ENDIAN
            return
        with self.spooled(instance) as spool:
            yield spool, instance.transfer_syntax_uid

    def inflated(self, instance: StoredInstance) -> BinaryIO:
        """A deflated instance's Explicit VR Little Endian copy (storage.dataset.inflated_copy),
        for the caller to close."""
        with self.spooled(instance) as spool:
            return inflated_copy(spool, self.max_inflated_bytes)

    def backfill_metadata(self, instance: StoredInstance) -> bytes:
        with self.spooled(instance) as spool:
            header = read_header(spool, self.max_inflated_bytes)
        self._catalog.store_metadata(instance.pk, header)
        return header.metadata

    def backfill_all(self) -> int:
        """Make the metadata of every instance stored before it was kept; return how many.
        Serving does this lazily; this is for doing it ahead, after an upgrade."""
        done = 0
        while batch := self._catalog.without_metadata():
            for instance in batch:
                self.backfill_metadata(instance)
            done += len(batch)
        return done

    def instance_with_details(self, study_uid: str, series_uid: str,
                              sop_instance_uid: str) -> tuple[StoredInstance, InstanceDetails] | None:
        """One instance and its details in one catalog read (what a frames request needs); None
        when it is not held here."""
        found = self._catalog.instance_with_details(study_uid, series_uid, sop_instance_uid)
        if found is None or found[1] is not None:
            return found
        return found[0], self.details(found[0])   # stored before metadata was kept: made now

    def details(self, instance: StoredInstance) -> InstanceDetails:
        """Metadata and pixel data location of one instance, in one catalog read."""
        found = self._catalog.details(instance)
        if found is None:
            self.backfill_metadata(instance)
            found = self._catalog.details(instance)
        return found

    def details_of(self, found: Sequence[StoredInstance]) -> dict[int, InstanceDetails]:
        """The details of these instances by primary key, in one catalog read (those stored before
        metadata was kept made now, one by one)."""
        result = self._catalog.details_of(found)
        for instance in found:
            if instance.pk not in result:
                result[instance.pk] = self.details(instance)
        return result

    def sweep(self, grace_seconds: float = 3600.0, now: float | None = None,
              pending_grace: float = PENDING_GRACE) -> int:
        """Delete blobs older than the grace period that no catalog row references and no store in
        progress is writing (storage.catalog.Catalog.mark_pending), and what interrupted writes
        left: temporary files, S3 multipart uploads, pending marks older than ``pending_grace``;
        and the blobs of deleted instances that could not be removed when they were deleted."""
        cutoff = (time.time() if now is None else now) - grace_seconds
        removed = 0
        while gone := self.remove_doomed(pending_grace=pending_grace):
            removed += gone
        batch: list[str] = []

        def flush() -> int:
            orphans = self._catalog.unreferenced(batch, pending_grace)
            for key in orphans:
                _delete_quietly(self._blobs, key)
            batch.clear()
            return len(orphans)

        for key, modified in self._blobs.list():
            if modified < cutoff:
                batch.append(key)
                if len(batch) >= SWEEP_BATCH:
                    removed += flush()
        removed += flush()
        stale = getattr(self._blobs, "remove_stale_temporaries", None)
        if stale is not None:
            removed += stale(grace_seconds)
        self._catalog.forget_stale_pending(pending_grace)
        return removed



class StoreBatch:
    """Instances stored together: each blob is written as it is added, and the
    catalog rows of all of them are committed in one transaction by ``commit``.

    Outcomes come back in the order the instances were added. Nothing added is
    visible to readers before ``commit``; each instance is still all-or-nothing.
    """

    def __init__(self, archive: Archive, replace: bool = False) -> None:
        self._archive = archive
        self._replace = replace
        self._outcomes: list[StoreOutcome | None] = []
        self._pending: list[tuple[int, PendingInstance]] = []
        self._id = uuid.uuid4().hex        # names this batch's pending marks
        self._marked: set[str] = set()     # blob directories marked since the last commit
        self._doomed: set[str] = set()     # doomed blob keys under them (Catalog.mark_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add_failure(self, outcome: StoreOutcome) -> None:
        """Record an instance that failed before it reached the archive (e.g. a bad part)."""
        self._outcomes.append(outcome)

    def add(self, fp: BinaryIO, sha256: str | None = None, expected_study: str | None = None) -> None:
        """Store the blob of the Part 10 instance ``fp`` (seekable; ``sha256``, the hex digest of its
        bytes, is computed here when the caller has not while receiving it)."""
        if sha256 is None:
            sha256 = file_sha256(fp)
        try:
            header = read_header(fp, self._archive.max_inflated_bytes, self._archive.max_sequence_items)
        except RejectedInstance as exc:
            self._outcomes.append(StoreOutcome(exc.sop_class, exc.sop_instance, failure=exc.reason,
                                               message=exc.message))
            return
        ids = _ids(header)
        if expected_study is not None and header.study_uid != expected_study:
            self._outcomes.append(StoreOutcome(**ids, failure=FailureReason.DATASET_MISMATCH, message=(
                f"Study Instance UID {header.study_uid} does not match the request URL")))
            return
        key = blob_key(header.study_uid, header.series_uid, header.sop_instance_uid, sha256)
        fp.seek(0)
        try:
            directory = key.rsplit("/", 1)[0]
            if directory not in self._marked:   # the sweep leaves what is under it until this batch commits
                # A deleted instance's blob still to be removed is never written again (its removal
                # could take the new one); removal waits for the mark to go.
                self._doomed |= self._archive._catalog.mark_pending(directory, self._id)
                self._marked.add(directory)
            if key in self._doomed:
                key = f"{key.removesuffix('.dcm')}.{uuid.uuid4().hex[:12]}.dcm"
            size = self._archive._blobs.put(key, fp)
        except Exception as exc:
            log.exception("blob write failed for %s", header.sop_instance_uid)
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            self._outcomes.append(StoreOutcome(
                **ids, failure=FailureReason.OUT_OF_RESOURCES if full else FailureReason.PROCESSING_FAILURE,
                message="storage is full" if full else "the blob store could not write the instance"))
            return
        self._pending.append((len(self._outcomes), PendingInstance(header, size, sha256, key)))
        self._outcomes.append(None)

    def commit(self) -> list[StoreOutcome]:
        """Make the added blobs durable, record them in the catalog, and return every outcome."""
        archive = self._archive
        pending, self._pending = self._pending, []
        if pending:
            # A fixed order of row locks keeps concurrent batches from deadlocking.
            pending.sort(key=lambda p: (p[1].header.study_uid, p[1].header.series_uid, p[1].header.sop_instance_uid))
            items = [item for _, item in pending]
            try:
                archive._blobs.sync([item.blob_key for item in items])
            except Exception:
                # Not durable, so not recorded: the blobs are orphans for the sweep.
                log.exception("the blob store could not make a batch of %d durable", len(items))
                registrations = [Registration(Outcome.ERROR, detail="the blob store could not make the instance "
                                              "durable") for _ in items]
            else:
                registrations = self._register(items)
            for (index, item), registration in zip(pending, registrations):
                self._outcomes[index] = self._settle(item, registration)
        if self._marked:   # committed or failed, this batch writes nothing more there for now
            self._marked, self._doomed = set(), set()
            try:
                archive._catalog.forget_pending(self._id)
            except Exception:   # the catalog is away: the marks expire after their grace instead
                log.exception("could not forget the pending marks of a store")
        return [o for o in self._outcomes if o is not None]

    def _register(self, items: list[PendingInstance]) -> list[Registration]:
        try:
            return self._archive._catalog.register_many(items, replace=self._replace)
        except Exception:   # one instance the catalog refuses must not cost the others: each alone, then
            log.warning("catalog write failed for a batch of %d; recording them one by one", len(items))
            return [self._register_alone(item) for item in items]

    def _register_alone(self, item: PendingInstance) -> Registration:
        try:
            return self._archive._catalog.register_many([item], replace=self._replace)[0]
        except Exception as exc:
            # The blob stays as an orphan for the sweep: it may be the very blob an earlier,
            # identical upload of the same instance is catalogued with.
            log.exception("catalog write failed for %s", item.header.sop_instance_uid)
            return Registration(Outcome.ERROR, detail=f"the catalog could not record the instance ({type(exc).__name__})")

    def _settle(self, item: PendingInstance, registration: Registration) -> StoreOutcome:
        ids = _ids(item.header)
        if registration.outcome in (Outcome.CREATED, Outcome.IDENTICAL):
            return StoreOutcome(**ids)
        if registration.outcome is Outcome.REPLACED:
            # The replaced blob is left to the sweep: deleted here, it could be the blob a concurrent
            # store of the same content has just made current again, or one a reader is streaming.
            return StoreOutcome(**ids)
        if registration.outcome is Outcome.ERROR:   # never catalogued: an orphan, the sweep's to remove
            return StoreOutcome(**ids, failure=FailureReason.PROCESSING_FAILURE, message=registration.detail)
        # Refused: the blob we wrote has a key no catalog row can point at.
        _delete_quietly(self._archive._blobs, item.blob_key)
        reason = (FailureReason.DUPLICATE_SOP_INSTANCE if registration.outcome is Outcome.CONFLICT
                  else FailureReason.DATASET_MISMATCH)
        return StoreOutcome(**ids, failure=reason, message=registration.detail)


def file_sha256(fp: BinaryIO) -> str:
    """The hex SHA-256 of a seekable file's bytes; ``fp`` is left at its start."""
    fp.seek(0)
    digest = hashlib.sha256()
    while chunk := fp.read(CHUNK_SIZE):
        digest.update(chunk)
    fp.seek(0)
    return digest.hexdigest()


def _delete_quietly(blobs: BlobStore, key: str) -> None:
    try:
        blobs.delete(key)
    except Exception:
        log.exception("could not delete blob %s; the sweep will retry", key)


def _ids(header: InstanceHeader) -> dict[str, str]:
    return dict(sop_class_uid=header.sop_class_uid, sop_instance_uid=header.sop_instance_uid,
                study_uid=header.study_uid, series_uid=header.series_uid)


RANGED_READ = 64 << 10


class _RangedBlob(io.RawIOBase):
    """A blob read by ranges of the store, as a raw file (Archive.ranged buffers it)."""

    def __init__(self, archive: Archive, instance: StoredInstance) -> None:
        self.archive, self.instance, self.position = archive, instance, 0
        self.name = f"blob:{instance.blob_key}"   # pydicom asks for a name; no file is opened by it

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.instance.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        count = min(len(buffer), max(0, self.instance.size - self.position))
        if count <= 0:
            return 0
        data = self.archive.read(self.instance, self.position, count)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)
