"""The catalog: patients, studies, series and instances, in SQLite or PostgreSQL.

SQLAlchemy Core gives one schema and one set of parameterised statements for
both databases, with each dialect's ``INSERT … ON CONFLICT`` for safe upserts.
Attribute columns are named by their DICOM keyword so that search can map a
query key to a column through a whitelist, never by string building.
"""
from __future__ import annotations

import hashlib

import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson
from sqlalchemy import bindparam, create_engine, delete, event, func, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError

from . import migrations
from .dataset import INSTANCE_KEYWORDS, PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS, InstanceHeader
from .search import Query, count as count_matches, run as run_search
from .schema import (
    STUDY_PATIENT_NAME, commitment_results, doomed_blobs, instance_metadata, instances, metadata, patients,
    pending_blobs, person_name_columns, person_name_tokens, person_name_tokens_of, rejected_instances, series, studies,
    viewer_sessions,
)

# Retrieve runs on every WADO request: its statements are built once, with bound parameters.
_STORED = (
    select(
        studies.c.StudyInstanceUID, series.c.SeriesInstanceUID, instances.c.SOPInstanceUID,
        instances.c.SOPClassUID, instances.c.TransferSyntaxUID, instances.c.size, instances.c.blob_key,
        instances.c.pk, instances.c.sha256,
    )
    .select_from(instances.join(series, instances.c.series_pk == series.c.pk)
                 .join(studies, series.c.study_pk == studies.c.pk))
)
_RETRIEVE = (
    _STORED.where(studies.c.StudyInstanceUID == bindparam("study"))
    .order_by(series.c.SeriesNumber, series.c.SeriesInstanceUID, instances.c.InstanceNumber,
              instances.c.SOPInstanceUID)
)
_STUDY_QUERY = _RETRIEVE
_SERIES_QUERY = _RETRIEVE.where(series.c.SeriesInstanceUID == bindparam("series"))
_INSTANCE_QUERY = _SERIES_QUERY.where(instances.c.SOPInstanceUID == bindparam("sop"))



def _resource_query(study_uid: str, series_uid: str | None, sop_instance_uid: str | None) -> tuple[Any, dict]:
    """The retrieve statement of a study, series or instance, and its parameters."""
    if sop_instance_uid is not None:
        return _INSTANCE_QUERY, {"study": study_uid, "series": series_uid, "sop": sop_instance_uid}
    if series_uid is not None:
        return _SERIES_QUERY, {"study": study_uid, "series": series_uid}
    return _STUDY_QUERY, {"study": study_uid}


_METADATA = select(instance_metadata.c.instance_pk, instance_metadata.c.json).where(
    instance_metadata.c.instance_pk.in_(bindparam("pks", expanding=True)))

_DETAILS_OF = select(instance_metadata.c.instance_pk, instance_metadata.c.json, instance_metadata.c.pixel_offset,
                     instance_metadata.c.pixel_length, instance_metadata.c.fragments).where(
    instance_metadata.c.instance_pk.in_(bindparam("pks", expanding=True)))

# One instance with its details (metadata, pixel data location) in one read: a frames request's.
_INSTANCE_WITH_DETAILS = (
    select(*_RETRIEVE.selected_columns, instance_metadata.c.json, instance_metadata.c.pixel_offset,
           instance_metadata.c.pixel_length, instance_metadata.c.fragments)
    .select_from(instances.join(series, instances.c.series_pk == series.c.pk)
                 .join(studies, series.c.study_pk == studies.c.pk)
                 .outerjoin(instance_metadata, instance_metadata.c.instance_pk == instances.c.pk))
    .where(studies.c.StudyInstanceUID == bindparam("study"), series.c.SeriesInstanceUID == bindparam("series"),
           instances.c.SOPInstanceUID == bindparam("sop"))
)

_INSTANCE_BY_UID = select(instances.c.pk, instances.c.series_pk, instances.c.sha256, instances.c.blob_key).where(
    instances.c.SOPInstanceUID == bindparam("sop"))
_SERIES_BY_UID = (select(series.c.pk, series.c.study_pk, studies.c.StudyInstanceUID)
                  .join(studies, series.c.study_pk == studies.c.pk)
                  .where(series.c.SeriesInstanceUID == bindparam("series")))
_STUDY_BY_UID = select(studies.c.pk).where(studies.c.StudyInstanceUID == bindparam("study"))
_PATIENT_BY_KEY = select(patients.c.pk).where(patients.c.patient_key == bindparam("key"))
# Every attribute column, empty: rows always bind the same parameter set, so the
# compiled INSERT is reused from SQLAlchemy's cache.
_NO_PATIENT_ATTRIBUTES = dict.fromkeys(PATIENT_KEYWORDS)
_NO_STUDY_ATTRIBUTES = dict.fromkeys(STUDY_KEYWORDS)
_NO_SERIES_ATTRIBUTES = dict.fromkeys(SERIES_KEYWORDS)
_NO_INSTANCE_ATTRIBUTES = dict.fromkeys(INSTANCE_KEYWORDS)


@dataclass(frozen=True)
class InstanceDetails:
    metadata: bytes                 # DICOM JSON (storage.metadata)
    pixel_offset: int | None        # of a native pixel data value in the blob, when readable in place
    pixel_length: int | None
    fragments: list | None = None   # encapsulated: each frame's [offset, length] fragments


def _instance_details(row) -> InstanceDetails:  # noqa: ANN001 - a row with the metadata table's columns
    return InstanceDetails(row.json.encode(), row.pixel_offset, row.pixel_length,
                           orjson.loads(row.fragments) if row.fragments else None)


def _details(header: InstanceHeader) -> dict:
    pixels = header.pixels
    native = pixels is not None and pixels.length is not None
    fragments = pixels.frames if pixels is not None else None
    return {"json": header.metadata.decode(), "pixel_offset": pixels.offset if native else None,
            "pixel_length": pixels.length if native else None,
            "fragments": orjson.dumps(fragments).decode() if fragments else None}


@dataclass(frozen=True)
class StoredInstance:
    """What retrieve needs to know about one instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    blob_key: str
    pk: int
    sha256: str


@dataclass(frozen=True)
class PendingInstance:
    """An instance whose blob is written, waiting for its catalog row."""

    header: InstanceHeader
    size: int
    sha256: str
    blob_key: str


class SchemaOutdated(RuntimeError):
    """The catalog's tables are older than this code."""


@dataclass(frozen=True)
class SeriesRow:
    pk: int
    study_pk: int
    created: bool       # by this transaction


class Outcome(Enum):
    """What registering an instance in the catalog came to."""

    CREATED = "created"
    IDENTICAL = "identical"      # the same content was catalogued already
    REPLACED = "replaced"        # other content was, and replace mode replaced it
    CONFLICT = "conflict"        # other content was, and is kept
    HIERARCHY = "hierarchy"      # its series or instance is filed under another study or series
    ERROR = "error"              # the catalog could not record it


@dataclass(frozen=True)
class Registration:
    """The outcome of registering an instance in the catalog."""

    outcome: Outcome
    previous_blob_key: str | None = None
    detail: str = ""


def retried(transaction: Callable[..., int], *args: Any) -> int:
    """``transaction(*args)``, again up to three times when the database aborts it: a deadlock
    with a concurrent store, in which PostgreSQL chose this transaction to fail."""
    for attempt in range(3):
        try:
            return transaction(*args)
        except OperationalError:
            time.sleep(0.05 * (attempt + 1))
    return transaction(*args)


class Catalog:
    def __init__(self, url: str, durable: bool = True) -> None:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        self.durable = durable
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        self._statements = {
            "insert_patient": insert(patients).on_conflict_do_nothing(index_elements=["patient_key"])
            .returning(patients.c.pk),
            "insert_study": insert(studies).on_conflict_do_nothing(index_elements=["StudyInstanceUID"])
            .returning(studies.c.pk),
            "insert_name_token": insert(person_name_tokens).on_conflict_do_nothing(),
            "insert_metadata": insert(instance_metadata).on_conflict_do_nothing(),
            "insert_series": insert(series).on_conflict_do_nothing(index_elements=["SeriesInstanceUID"])
            .returning(series.c.pk),
            "insert_instance": insert(instances).on_conflict_do_nothing(index_elements=["SOPInstanceUID"])
            .returning(instances.c.pk),
        }
        self._statements["mark_pending"] = insert(pending_blobs).on_conflict_do_nothing()
        self._statements["doom"] = insert(doomed_blobs).on_conflict_do_nothing()

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self) -> Engine:
        """One engine per process, made after fork (never shared with a parent)."""
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    self._engine = self._make_engine()
                    self._pid = os.getpid()
        return self._engine

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        path = self.url.split(":///", 1)[1] if ":///" in self.url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})
        synchronous = "FULL" if self.durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # noqa: ANN001
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front so two of them never deadlock
            # upgrading read locks; readers stay deferred and never block in WAL.
            mode = "IMMEDIATE" if conn.get_execution_options().get("writer") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def create_schema(self) -> None:
        """Make the tables of an empty catalog (at the latest version); safe when several
        workers start at once.

        Raises SchemaOutdated when the catalog is behind this version of the code, rather
        than failing later on the first store or search: `dicomweb migrate` brings it up.
        """
        for attempt in range(5):
            try:
                with self.engine.connect() as conn:
                    empty = not set(inspect(conn).get_table_names()) & set(metadata.tables)
                if empty:
                    migrations.migrate(self.engine)
                break
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        with self.engine.connect() as conn:
            version, missing = migrations.current(conn), migrations.missing_columns(conn)
        if version < migrations.LATEST or missing:
            where = self.engine.url.render_as_string(hide_password=True)
            lacks = f"; it lacks {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}" if missing else ""
            raise SchemaOutdated(f"the catalog at {where} is at version {version}, this code needs "
                                 f"{migrations.LATEST}{lacks}: run `dicomweb migrate`")

    def dispose(self) -> None:
        """Close pooled connections (before a fork: children make their own)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _writer(self) -> Connection:
        return self.engine.connect().execution_options(writer=True)

    @contextmanager
    def writer_transaction(self) -> Iterator[Connection]:
        """A durable write transaction, for what keeps its own tables here (storage.worklist)."""
        with self._writer() as conn, conn.begin():
            yield conn

    # -- ingest ---------------------------------------------------------------

    def register_many(self, items: Sequence[PendingInstance], replace: bool = False) -> list[Registration]:
        """Record instances whose blobs are already stored, in one transaction.

        An instance already catalogued with the same content is ``identical``;
        with other content it is a ``conflict``, or ``replaced`` when asked to.
        An instance whose series or SOP Instance UID is already filed under
        another study or series is refused as ``hierarchy``. One transaction
        (one log flush) for a whole STOW request is most of what makes ingest fast.
        """
        with self._writer() as conn, conn.begin():
            found: dict[tuple[str, str], SeriesRow | Registration] = {}
            results = []
            added = Counter()           # new instances per series pk
            for item in items:
                key = (item.header.study_uid, item.header.series_uid)
                if key not in found:
                    found[key] = self._series(conn, item.header)
                row = found[key]
                if isinstance(row, Registration):
                    results.append(row)
                    continue
                registration = self._register_instance(conn, item, row.pk, replace)
                if registration.outcome is Outcome.CREATED:
                    added[row.pk] += 1
                results.append(registration)
            rows = [r for r in found.values() if isinstance(r, SeriesRow)]
            self._update_counts(conn, rows, added)
            return results

    def _update_counts(self, conn: Connection, rows: list["SeriesRow"], added: Counter) -> None:
        """Keep the stored NumberOf… counts and ModalitiesInStudy current, so search never aggregates.

        Rows are locked series first, then studies, each in key order, so that
        concurrent batches never wait on each other in a cycle. A study's series
        and modalities are recounted under its row lock; instances are added up.
        """
        for series_pk in sorted(added):
            conn.execute(update(series).where(series.c.pk == series_pk).values(
                NumberOfSeriesRelatedInstances=series.c.NumberOfSeriesRelatedInstances + added[series_pk]))
        per_study: dict[int, list[SeriesRow]] = {}
        for row in rows:
            per_study.setdefault(row.study_pk, []).append(row)
        for study_pk in sorted(per_study):
            study_rows = per_study[study_pk]
            new_instances = sum(added[r.pk] for r in study_rows)
            values: dict = {}
            if new_instances:
                values["NumberOfStudyRelatedInstances"] = studies.c.NumberOfStudyRelatedInstances + new_instances
            if any(r.created for r in study_rows):
                # FOR NO KEY UPDATE: it must not wait on the key-share locks foreign keys take.
                conn.execute(select(studies.c.pk).where(studies.c.pk == study_pk).with_for_update(key_share=True))
                modalities = conn.execute(select(series.c.Modality).distinct().where(
                    series.c.study_pk == study_pk, series.c.Modality.is_not(None))).scalars()
                values["ModalitiesInStudy"] = "\\".join(sorted(modalities))[:200] or None   # the column's width
                values["NumberOfStudyRelatedSeries"] = conn.execute(
                    select(func.count()).where(series.c.study_pk == study_pk)).scalar_one()
            if values:
                conn.execute(update(studies).where(studies.c.pk == study_pk).values(values))

    def _register_instance(self, conn: Connection, item: PendingInstance, series_pk: int,
                           replace: bool) -> Registration:
        header = item.header
        row = {
            **_NO_INSTANCE_ATTRIBUTES,
            **header.instance,
            "SOPInstanceUID": header.sop_instance_uid,
            "series_pk": series_pk,
            "SOPClassUID": header.sop_class_uid,
            "TransferSyntaxUID": header.transfer_syntax_uid,
            "size": item.size,
            "sha256": item.sha256,
            "blob_key": item.blob_key,
            "stored_at": time.time(),
        }
        inserted = conn.execute(self._statements["insert_instance"], row).first()
        if inserted is not None:
            conn.execute(instance_metadata.insert(), {"instance_pk": inserted.pk, **_details(header)})
            return Registration(Outcome.CREATED)
        existing = conn.execute(_INSTANCE_BY_UID, {"sop": header.sop_instance_uid}).one()
        if existing.series_pk != series_pk:
            return Registration(Outcome.HIERARCHY, detail="SOP Instance UID is already stored in another series")
        if existing.sha256 == item.sha256:
            return Registration(Outcome.IDENTICAL)
        if not replace:
            return Registration(Outcome.CONFLICT, detail="SOP Instance UID is already stored with other content")
        conn.execute(update(instances).where(instances.c.pk == existing.pk).values(row))
        conn.execute(update(instance_metadata).where(instance_metadata.c.instance_pk == existing.pk)
                     .values(_details(header)))
        return Registration(Outcome.REPLACED, previous_blob_key=existing.blob_key)

    def _series(self, conn: Connection, header: InstanceHeader) -> "SeriesRow | Registration":
        found = conn.execute(_SERIES_BY_UID, {"series": header.series_uid}).first()
        created = False
        if found is None:
            study_pk = self._study_pk(conn, header)
            created = conn.execute(self._statements["insert_series"], {
                **_NO_SERIES_ATTRIBUTES, **header.series, "SeriesInstanceUID": header.series_uid,
                "study_pk": study_pk}).first() is not None
            found = conn.execute(_SERIES_BY_UID, {"series": header.series_uid}).one()
        if found.StudyInstanceUID != header.study_uid:
            return Registration(Outcome.HIERARCHY, detail="Series Instance UID is already stored in another study")
        return SeriesRow(found.pk, found.study_pk, created)

    def _study_pk(self, conn: Connection, header: InstanceHeader) -> int:
        pk = conn.execute(_STUDY_BY_UID, {"study": header.study_uid}).scalar()
        if pk is not None:
            return pk
        patient_key = f"{header.patient.get('IssuerOfPatientID', '')}\x1f{header.patient.get('PatientID', '')}"
        if len(patient_key) > 200:   # longer than the key column (and than LO allows): its digest, not a prefix
            patient_key = "sha256:" + hashlib.sha256(patient_key.encode()).hexdigest()
        patient_name = header.patient.get("PatientName")
        created = conn.execute(self._statements["insert_patient"], {
            **_NO_PATIENT_ATTRIBUTES, **header.patient, **person_name_columns("PatientName", patient_name),
            "patient_key": patient_key}).first()
        patient_pk = conn.execute(_PATIENT_BY_KEY, {"key": patient_key}).scalar_one()
        if created is not None:
            self._add_name_tokens(conn, "PatientName", patient_name, patient_pk)
        referring = header.study.get("ReferringPhysicianName")
        created = conn.execute(self._statements["insert_study"], {
            **_NO_STUDY_ATTRIBUTES, **header.study, **person_name_columns("ReferringPhysicianName", referring),
            "patient_name_upper": person_name_columns("PatientName", patient_name)["PatientName_upper"],
            "StudyInstanceUID": header.study_uid, "patient_pk": patient_pk, "created_at": time.time()}).first()
        study_pk = conn.execute(_STUDY_BY_UID, {"study": header.study_uid}).scalar_one()
        if created is not None:
            self._add_name_tokens(conn, "ReferringPhysicianName", referring, study_pk)
            self._add_name_tokens(conn, STUDY_PATIENT_NAME, patient_name, study_pk)
        return study_pk

    def _add_name_tokens(self, conn: Connection, keyword: str, name: str | None, owner_pk: int) -> None:
        rows = [{"keyword": keyword, "token": token, "owner_pk": owner_pk} for token in person_name_tokens_of(name)]
        if rows:
            conn.execute(self._statements["insert_name_token"], rows)

    # -- retrieve -------------------------------------------------------------

    def instances(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uid: str | None = None) -> list[StoredInstance]:
        """The instances under a study, series or single instance, in a stable order."""
        with self.engine.connect() as conn:
            return [StoredInstance(*row) for row in conn.execute(*_resource_query(study_uid, series_uid, sop_instance_uid))]

    def instance_with_details(self, study_uid: str, series_uid: str,
                              sop_instance_uid: str) -> tuple[StoredInstance, InstanceDetails | None] | None:
        """One instance and its details (None when not yet recorded), in one read; None when
        the catalog has no such instance."""
        with self.engine.connect() as conn:
            row = conn.execute(_INSTANCE_WITH_DETAILS, {"study": study_uid, "series": series_uid,
                                                        "sop": sop_instance_uid}).first()
        if row is None:
            return None
        stored = StoredInstance(*row[:len(_RETRIEVE.selected_columns)])
        if row.json is None:
            return stored, None
        return stored, _instance_details(row)

    def metadata(self, found: Sequence[StoredInstance]) -> dict[int, bytes]:
        """Stored DICOM JSON of these instances by primary key; those without any are absent."""
        result: dict[int, bytes] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(found), 900):   # bounded IN lists (SQLite's variable limit)
                chunk = [i.pk for i in found[start:start + 900]]
                for pk, text in conn.execute(_METADATA, {"pks": chunk}):
                    result[pk] = text.encode()
        return result

    def without_metadata(self, limit: int = 500) -> list[StoredInstance]:
        """Instances stored before metadata was kept (up to ``limit``)."""
        statement = (
            select(*_RETRIEVE.selected_columns)
            .select_from(instances.join(series, instances.c.series_pk == series.c.pk)
                         .join(studies, series.c.study_pk == studies.c.pk)
                         .outerjoin(instance_metadata, instance_metadata.c.instance_pk == instances.c.pk))
            .where(instance_metadata.c.instance_pk.is_(None)).order_by(instances.c.pk).limit(limit)
        )
        with self.engine.connect() as conn:
            return [StoredInstance(*row) for row in conn.execute(statement)]

    def store_metadata(self, instance_pk: int, header: InstanceHeader) -> None:
        """Record the metadata of an instance stored before metadata was kept (backfill)."""
        with self._writer() as conn, conn.begin():
            conn.execute(self._statements["insert_metadata"], {"instance_pk": instance_pk, **_details(header)})

    def details(self, instance: StoredInstance) -> InstanceDetails | None:
        """An instance's metadata and pixel data location, or None when not yet recorded."""
        return self.details_of([instance]).get(instance.pk)

    def details_of(self, found: Sequence[StoredInstance]) -> dict[int, InstanceDetails]:
        """The details of these instances by primary key, in one read; those not yet recorded are absent."""
        result: dict[int, InstanceDetails] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(found), 900):   # bounded IN lists (SQLite's variable limit)
                for row in conn.execute(_DETAILS_OF, {"pks": [i.pk for i in found[start:start + 900]]}):
                    result[row.instance_pk] = _instance_details(row)
        return result

    def mark_pending(self, blob_prefix: str, batch: str) -> set[str]:
        """Note that the store ``batch`` is about to write blobs under ``blob_prefix``, so that the
        sweep leaves them until its commit (or, after a crash, until the mark is older than its
        grace). Not made durable: a mark lost in a crash leaves orphans, which the sweep is for.
        Returns the doomed blob keys under it, in the same transaction: the store writes other keys
        (a doomed one seen removed later was removed before this read; Archive.remove_doomed)."""
        with self.unsynced_transaction() as conn:
            conn.execute(self._statements["mark_pending"],
                         {"blob_prefix": blob_prefix, "batch": batch, "since": time.time()})
            return set(conn.execute(select(doomed_blobs.c.blob_key).where(
                doomed_blobs.c.blob_key.startswith(blob_prefix + "/", autoescape=True))).scalars())

    def forget_pending(self, batch: str) -> None:
        """The store ``batch`` has committed (or failed): its marks go. Not made durable either: a
        forgetting lost in a crash leaves marks that expire after their grace."""
        with self.unsynced_transaction() as conn:
            conn.execute(delete(pending_blobs).where(pending_blobs.c.batch == batch))

    @contextmanager
    def unsynced_transaction(self) -> Iterator[Connection]:
        """A write transaction whose commit waits for no disk sync (what a crash may lose)."""
        with self._writer() as conn:
            raw = conn.connection.dbapi_connection
            if self.is_sqlite:   # WAL without a sync for this one commit (set outside any transaction)
                raw.execute("PRAGMA synchronous=OFF")
            try:
                with conn.begin():
                    if not self.is_sqlite:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    yield conn
            finally:
                if self.is_sqlite:
                    raw.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")

    def unreferenced(self, blob_keys: list[str], pending_grace: float = 86400.0) -> set[str]:
        """Those of ``blob_keys`` that no instance row points at and no store in progress may be
        writing (a pending mark of their directory younger than ``pending_grace``; older ones are
        of stores that died)."""
        if not blob_keys:
            return set()
        with self.engine.connect() as conn:
            used = self._referenced(conn, blob_keys)
            busy = self._being_written(conn, blob_keys, pending_grace)
        return {key for key in blob_keys if key not in used and key.rsplit("/", 1)[0] not in busy}

    @staticmethod
    def _being_written(conn: Connection, blob_keys: Sequence[str], pending_grace: float) -> set[str]:
        """The directories of ``blob_keys`` a store in progress has marked (marks younger than
        ``pending_grace``; older ones are of stores that died)."""
        prefixes = list({key.rsplit("/", 1)[0] for key in blob_keys})
        return set(conn.execute(select(pending_blobs.c.blob_prefix).where(
            pending_blobs.c.blob_prefix.in_(prefixes), pending_blobs.c.since > time.time() - pending_grace)).scalars())

    @staticmethod
    def _referenced(conn: Connection, blob_keys: Sequence[str]) -> set[str]:
        """Those of ``blob_keys`` an instance row, or a rejected instance kept until purged, points at."""
        keys = list(blob_keys)
        return (set(conn.execute(select(instances.c.blob_key).where(instances.c.blob_key.in_(keys))).scalars())
                | set(conn.execute(select(rejected_instances.c.blob_key)
                                   .where(rejected_instances.c.blob_key.in_(keys))).scalars()))

    def forget_stale_pending(self, older_than: float) -> int:
        """Remove pending marks older than ``older_than`` seconds (their stores died); how many."""
        with self._writer() as conn, conn.begin():
            return conn.execute(delete(pending_blobs).where(pending_blobs.c.since < time.time() - older_than)).rowcount

    def blob_references(self, batch: int = 5000) -> Iterator[list[tuple[int, str]]]:
        """Every instance's (pk, blob key), in batches of ``batch`` by primary key."""
        last = 0
        with self.engine.connect() as conn:
            while rows := conn.execute(select(instances.c.pk, instances.c.blob_key).where(instances.c.pk > last)
                                       .order_by(instances.c.pk).limit(batch)).all():
                yield [(row.pk, row.blob_key) for row in rows]
                last = rows[-1].pk

    def forget(self, pks: Sequence[int]) -> None:
        """Remove instance rows (whose blobs are lost), keeping the counts of their series and
        studies, and removing series and studies left empty."""
        if not pks:
            return
        with self._writer() as conn, conn.begin():
            self._remove_rows(conn, pks)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_instance_uid: str | None = None,
               now: float | None = None) -> int:
        """Delete a study, series or instance: its rows go (counts and ModalitiesInStudy kept right,
        empty series and studies removed) and its blob keys are doomed, in one durable transaction,
        the delete's commit point. How many instances went (0: none matched)."""
        if not self.instances(study_uid, series_uid, sop_instance_uid):   # a 404 takes no write lock
            return 0
        return retried(self._delete, study_uid, series_uid, sop_instance_uid, time.time() if now is None else now)

    def _delete(self, study_uid: str, series_uid: str | None, sop_instance_uid: str | None, now: float) -> int:
        with self._writer() as conn, conn.begin():
            # Rows locked in the order a store takes them (its series, then its study; PostgreSQL:
            # SQLite's writer lock covers all): a store adding to the resource either commits first
            # and is deleted with it, or waits and then fails whole, reported as a failure (its rows
            # would name a series or study that is gone).
            self._lock_rows(conn, study_uid, [series_uid] if series_uid is not None else None)
            rows = conn.execute(*_resource_query(study_uid, series_uid, sop_instance_uid)).all()
            if not rows:
                return 0
            self._remove_rows(conn, [row.pk for row in rows])
            conn.execute(self._statements["doom"], [{"blob_key": key, "since": now}
                                                   for key in sorted({row.blob_key for row in rows})])
            return len(rows)

    @staticmethod
    def _lock_rows(conn: Connection, study_uid: str, series_uids: Sequence[str] | None) -> None:
        """Lock the series rows (all of the study's when None), then the study row."""
        study_pk = select(studies.c.pk).where(studies.c.StudyInstanceUID == study_uid).scalar_subquery()
        locked = select(series.c.pk).where(series.c.study_pk == study_pk)
        if series_uids is not None:
            locked = locked.where(series.c.SeriesInstanceUID.in_(list(series_uids)))
        conn.execute(locked.order_by(series.c.pk).with_for_update())
        conn.execute(select(studies.c.pk).where(studies.c.StudyInstanceUID == study_uid).with_for_update())

    def _remove_rows(self, conn: Connection, pks: Sequence[int]) -> None:
        owners = conn.execute(select(instances.c.series_pk).distinct().where(instances.c.pk.in_(pks))).scalars().all()
        conn.execute(delete(instance_metadata).where(instance_metadata.c.instance_pk.in_(pks)))
        conn.execute(delete(instances).where(instances.c.pk.in_(pks)))
        for series_pk in owners:
            study_pk = conn.execute(select(series.c.study_pk).where(series.c.pk == series_pk)).scalar_one()
            left = conn.execute(select(func.count()).where(instances.c.series_pk == series_pk)).scalar_one()
            if left:
                conn.execute(update(series).where(series.c.pk == series_pk).values(
                    NumberOfSeriesRelatedInstances=left))
            else:
                conn.execute(delete(series).where(series.c.pk == series_pk))
            remaining = conn.execute(select(series.c.pk, series.c.Modality, series.c.NumberOfSeriesRelatedInstances)
                                     .where(series.c.study_pk == study_pk)).all()
            if not remaining:
                conn.execute(delete(person_name_tokens).where(person_name_tokens.c.owner_pk == study_pk,
                                                              person_name_tokens.c.keyword == STUDY_PATIENT_NAME))
                conn.execute(delete(studies).where(studies.c.pk == study_pk))
                continue
            modalities = sorted({r.Modality for r in remaining if r.Modality})
            conn.execute(update(studies).where(studies.c.pk == study_pk).values(
                NumberOfStudyRelatedSeries=len(remaining),
                NumberOfStudyRelatedInstances=sum(r.NumberOfSeriesRelatedInstances for r in remaining),
                ModalitiesInStudy="\\".join(modalities) or None))

    def reject(self, found: Sequence[StoredInstance], reason: str, note: str, now: float | None = None) -> int:
        """Hide ``found`` (of one study) from every resource (their rows go, counts kept right, as
        for a delete), keeping their blobs, listed in rejected_instances until purged; how many
        were still there."""
        if not found:
            return 0
        return retried(self._reject, found, reason, note, time.time() if now is None else now)

    def _reject(self, found: Sequence[StoredInstance], reason: str, note: str, when: float) -> int:
        with self._writer() as conn, conn.begin():
            self._lock_rows(conn, found[0].study_uid, sorted({i.series_uid for i in found}))
            pks = set(conn.execute(select(instances.c.pk).where(instances.c.pk.in_([i.pk for i in found]))).scalars())
            kept = [i for i in found if i.pk in pks]
            if not kept:
                return 0
            conn.execute(rejected_instances.insert(), [
                {"StudyInstanceUID": i.study_uid, "SeriesInstanceUID": i.series_uid,
                 "SOPInstanceUID": i.sop_instance_uid, "SOPClassUID": i.sop_class_uid, "blob_key": i.blob_key,
                 "reason": reason, "note": note, "rejected_at": when} for i in kept])
            self._remove_rows(conn, sorted(pks))
            return len(kept)

    def purge_rejected(self, before: float) -> int:
        """Forget the rejected instances rejected before ``before`` and doom their blobs; how many."""
        with self._writer() as conn, conn.begin():
            rows = conn.execute(select(rejected_instances.c.pk, rejected_instances.c.blob_key)
                                .where(rejected_instances.c.rejected_at < before)).all()
            if not rows:
                return 0
            conn.execute(delete(rejected_instances).where(rejected_instances.c.pk.in_([r.pk for r in rows])))
            conn.execute(self._statements["doom"], [{"blob_key": key, "since": time.time()}
                                                   for key in sorted({r.blob_key for r in rows})])
            return len(rows)

    def rejected(self, study_uid: str) -> list[Any]:
        """The rejected instances of a study (kept until purged)."""
        with self.engine.connect() as conn:
            return conn.execute(select(rejected_instances).where(rejected_instances.c.StudyInstanceUID == study_uid)
                                .order_by(rejected_instances.c.pk)).all()

    def instances_by_sop(self, sop_instance_uids: Sequence[str]) -> dict[str, StoredInstance]:
        """The instances of these SOP Instance UIDs that the archive holds, by UID."""
        found: dict[str, StoredInstance] = {}
        uids = list(dict.fromkeys(sop_instance_uids))
        with self.engine.connect() as conn:
            for start in range(0, len(uids), 500):
                rows = conn.execute(_STORED.where(instances.c.SOPInstanceUID.in_(uids[start:start + 500])))
                found.update({row.SOPInstanceUID: StoredInstance(*row) for row in rows})
        return found

    def keep_commitment(self, transaction_uid: str, peer: str | None, result: str) -> bool:
        """Record a Storage Commitment result; False when the Transaction UID is taken."""
        try:
            with self._writer() as conn, conn.begin():
                conn.execute(commitment_results.insert().values(transaction_uid=transaction_uid, peer=peer,
                                                                created=time.time(), result=result))
        except IntegrityError:
            return False
        return True

    def commitment(self, transaction_uid: str) -> Any:
        """The recorded result row (peer, created, result), or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(commitment_results).where(
                commitment_results.c.transaction_uid == transaction_uid)).first()

    def forget_commitments(self, before: float) -> int:
        with self._writer() as conn, conn.begin():
            return conn.execute(delete(commitment_results).where(commitment_results.c.created < before)).rowcount

    def doomed(self, limit: int = 1000) -> list[str]:
        """Doomed blob keys, oldest first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(doomed_blobs.c.blob_key).order_by(doomed_blobs.c.since)
                                     .limit(limit)).scalars())

    def removable(self, blob_keys: Sequence[str], pending_grace: float) -> set[str]:
        """Of doomed ``blob_keys``, those to remove now. One a row points at again is no longer
        doomed (forgotten here); one under a directory a store in progress has marked waits."""
        if not blob_keys:
            return set()
        with self._writer() as conn, conn.begin():
            used = self._referenced(conn, blob_keys)
            busy = self._being_written(conn, blob_keys, pending_grace)
            if used:
                conn.execute(delete(doomed_blobs).where(doomed_blobs.c.blob_key.in_(used)))
        return {k for k in blob_keys if k not in used and k.rsplit("/", 1)[0] not in busy}

    def forget_doomed(self, blob_keys: Sequence[str]) -> None:
        """These doomed blobs are gone."""
        with self._writer() as conn, conn.begin():
            conn.execute(delete(doomed_blobs).where(doomed_blobs.c.blob_key.in_(list(blob_keys))))

    def mark_upstream(self, sop_instance_uid: str, upstream: str) -> None:
        """Record that an instance is a facade's copy of an upstream's (and may be evicted)."""
        with self._writer() as conn, conn.begin():
            conn.execute(update(instances).where(instances.c.SOPInstanceUID == sop_instance_uid)
                         .values(upstream=upstream))

    def evict(self, upstream: str, max_bytes: int) -> list[str]:
        """Forget the oldest copies from ``upstream`` until they take at most ``max_bytes``;
        return the blob keys to delete (first in, first out)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(instances.c.pk, instances.c.size, instances.c.blob_key)
                                .where(instances.c.upstream == upstream).order_by(instances.c.stored_at.desc(),
                                                                                  instances.c.pk.desc())).all()
        kept, evicted = 0, []
        for row in rows:
            kept += row.size
            if kept > max_bytes:
                evicted.append(row)
        self.forget([row.pk for row in evicted])
        return [row.blob_key for row in evicted]

    # -- viewer sessions (service.sessions) ------------------------------------

    def open_session(self, token_sha256: str, peer: str, key_sha256: str, now: float) -> None:
        with self.unsynced_transaction() as conn:
            conn.execute(viewer_sessions.insert().values(token_sha256=token_sha256, peer=peer, key_sha256=key_sha256,
                                                         created=now, seen=now, ended=None))

    def session(self, token_sha256: str) -> Any:
        """The session row (peer, key_sha256, created, seen, ended), or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(viewer_sessions).where(viewer_sessions.c.token_sha256 == token_sha256)).first()

    def touch_session(self, token_sha256: str, now: float) -> None:
        with self.unsynced_transaction() as conn:
            conn.execute(update(viewer_sessions).where(viewer_sessions.c.token_sha256 == token_sha256)
                         .values(seen=now))

    def end_session(self, token_sha256: str, now: float) -> None:
        with self._writer() as conn, conn.begin():   # durable: a sign-out must outlive a crash
            conn.execute(update(viewer_sessions).where(viewer_sessions.c.token_sha256 == token_sha256)
                         .values(ended=now))

    def forget_sessions(self, seen_before: float) -> int:
        """Remove sessions unused since ``seen_before`` (expired whatever their state); how many."""
        with self._writer() as conn, conn.begin():
            return conn.execute(delete(viewer_sessions).where(viewer_sessions.c.seen < seen_before)).rowcount

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def search(self, query: "Query") -> tuple[list[dict], bool]:
        """Run a QIDO-RS query: a page of result rows, and whether more matched."""
        with self.engine.connect() as conn:
            return run_search(conn, query, self.is_sqlite)

    def count(self, query: "Query") -> int:
        """How many results a QIDO-RS query matches in all."""
        with self.engine.connect() as conn:
            return count_matches(conn, query, self.is_sqlite)
