"""The catalog: patients, studies, series and instances, in SQLite or PostgreSQL.

SQLAlchemy Core gives one schema and one set of parameterised statements for
both databases, with each dialect's ``INSERT … ON CONFLICT`` for safe upserts.
Attribute columns are named by their DICOM keyword so that search can map a
query key to a column through a whitelist, never by string building.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from sqlalchemy import (
    BigInteger, Column, Float, bindparam, ForeignKey, Index, Integer, MetaData, String, Table,
    create_engine, event, select, update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError

from .dataset import InstanceHeader, PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS

metadata = MetaData()


def _attribute_columns(keywords: Iterable[str]) -> list[Column]:
    return [Column(k, Integer if k in ("SeriesNumber", "InstanceNumber", "NumberOfFrames", "Rows", "Columns",
                                       "BitsAllocated") else String(400)) for k in keywords]


patients = Table(
    "patients", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_key", String(200), nullable=False, unique=True),
    *_attribute_columns(PATIENT_KEYWORDS),
)

studies = Table(
    "studies", metadata,
    Column("pk", Integer, primary_key=True),
    Column("StudyInstanceUID", String(64), nullable=False, unique=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False, index=True),
    *_attribute_columns(STUDY_KEYWORDS),
    Column("created_at", Float, nullable=False),
)

series = Table(
    "series", metadata,
    Column("pk", Integer, primary_key=True),
    Column("SeriesInstanceUID", String(64), nullable=False, unique=True),
    Column("study_pk", Integer, ForeignKey("studies.pk"), nullable=False, index=True),
    *_attribute_columns(SERIES_KEYWORDS),
)

instances = Table(
    "instances", metadata,
    Column("pk", Integer, primary_key=True),
    Column("SOPInstanceUID", String(64), nullable=False, unique=True),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False),
    Column("SOPClassUID", String(64), nullable=False),
    Column("TransferSyntaxUID", String(64), nullable=False),
    *_attribute_columns(("InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated")),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(400), nullable=False, index=True),
    Column("stored_at", Float, nullable=False),
    Index("ix_instances_series_order", "series_pk", "InstanceNumber"),
)


# Retrieve runs on every WADO request: its statements are built once, with bound parameters.
_RETRIEVE = (
    select(
        studies.c.StudyInstanceUID, series.c.SeriesInstanceUID, instances.c.SOPInstanceUID,
        instances.c.SOPClassUID, instances.c.TransferSyntaxUID, instances.c.size, instances.c.blob_key,
    )
    .select_from(instances.join(series, instances.c.series_pk == series.c.pk)
                 .join(studies, series.c.study_pk == studies.c.pk))
    .where(studies.c.StudyInstanceUID == bindparam("study"))
    .order_by(series.c.SeriesNumber, series.c.SeriesInstanceUID, instances.c.InstanceNumber,
              instances.c.SOPInstanceUID)
)
_STUDY_QUERY = _RETRIEVE
_SERIES_QUERY = _RETRIEVE.where(series.c.SeriesInstanceUID == bindparam("series"))
_INSTANCE_QUERY = _SERIES_QUERY.where(instances.c.SOPInstanceUID == bindparam("sop"))


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


@dataclass(frozen=True)
class Registration:
    """The outcome of registering an instance in the catalog."""

    outcome: str                  # "created", "identical", "replaced", "conflict", "hierarchy"
    previous_blob_key: str | None = None
    detail: str = ""


class Catalog:
    def __init__(self, url: str, durable: bool = True) -> None:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        self.durable = durable
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

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
        """Create missing tables; safe when several workers start at once."""
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def dispose(self) -> None:
        """Close pooled connections (before a fork: children make their own)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def drop_schema(self) -> None:
        metadata.drop_all(self.engine)

    def _writer(self) -> Connection:
        return self.engine.connect().execution_options(writer=True)

    def _insert(self, table: Table):
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    # -- ingest ---------------------------------------------------------------

    def register(self, header: InstanceHeader, size: int, sha256: str, blob_key: str,
                 replace: bool = False) -> Registration:
        """Record an instance whose blob is already stored, in one transaction.

        An instance already catalogued with the same content is ``identical``;
        with other content it is a ``conflict``, or ``replaced`` when asked to.
        An instance whose series or SOP Instance UID is already filed under
        another study or series is refused as ``hierarchy``.
        """
        with self._writer() as conn, conn.begin():
            series_pk = self._series_pk(conn, header)
            if isinstance(series_pk, Registration):
                return series_pk
            row = {
                "SOPInstanceUID": header.sop_instance_uid,
                "series_pk": series_pk,
                "SOPClassUID": header.sop_class_uid,
                "TransferSyntaxUID": header.transfer_syntax_uid,
                **header.instance,
                "size": size,
                "sha256": sha256,
                "blob_key": blob_key,
                "stored_at": time.time(),
            }
            inserted = conn.execute(
                self._insert(instances).values(row).on_conflict_do_nothing(index_elements=["SOPInstanceUID"])
                .returning(instances.c.pk)
            ).first()
            if inserted is not None:
                return Registration("created")
            existing = conn.execute(
                select(instances.c.pk, instances.c.series_pk, instances.c.sha256, instances.c.blob_key)
                .where(instances.c.SOPInstanceUID == header.sop_instance_uid)
            ).one()
            if existing.series_pk != series_pk:
                return Registration("hierarchy", detail="SOP Instance UID is already stored in another series")
            if existing.sha256 == sha256:
                return Registration("identical")
            if not replace:
                return Registration("conflict", detail="SOP Instance UID is already stored with other content")
            conn.execute(update(instances).where(instances.c.pk == existing.pk).values(row))
            return Registration("replaced", previous_blob_key=existing.blob_key)

    def _series_pk(self, conn: Connection, header: InstanceHeader) -> int | Registration:
        found = conn.execute(
            select(series.c.pk, studies.c.StudyInstanceUID)
            .join(studies, series.c.study_pk == studies.c.pk)
            .where(series.c.SeriesInstanceUID == header.series_uid)
        ).first()
        if found is None:
            study_pk = self._study_pk(conn, header)
            conn.execute(
                self._insert(series)
                .values(SeriesInstanceUID=header.series_uid, study_pk=study_pk, **header.series)
                .on_conflict_do_nothing(index_elements=["SeriesInstanceUID"])
            )
            found = conn.execute(
                select(series.c.pk, studies.c.StudyInstanceUID)
                .join(studies, series.c.study_pk == studies.c.pk)
                .where(series.c.SeriesInstanceUID == header.series_uid)
            ).one()
        if found.StudyInstanceUID != header.study_uid:
            return Registration("hierarchy", detail="Series Instance UID is already stored in another study")
        return found.pk

    def _study_pk(self, conn: Connection, header: InstanceHeader) -> int:
        pk = conn.execute(select(studies.c.pk).where(studies.c.StudyInstanceUID == header.study_uid)).scalar()
        if pk is not None:
            return pk
        patient_key = f"{header.patient.get('IssuerOfPatientID', '')}\x1f{header.patient.get('PatientID', '')}"
        conn.execute(
            self._insert(patients).values(patient_key=patient_key, **header.patient)
            .on_conflict_do_nothing(index_elements=["patient_key"])
        )
        patient_pk = conn.execute(select(patients.c.pk).where(patients.c.patient_key == patient_key)).scalar_one()
        conn.execute(
            self._insert(studies)
            .values(StudyInstanceUID=header.study_uid, patient_pk=patient_pk, created_at=time.time(), **header.study)
            .on_conflict_do_nothing(index_elements=["StudyInstanceUID"])
        )
        return conn.execute(select(studies.c.pk).where(studies.c.StudyInstanceUID == header.study_uid)).scalar_one()

    # -- retrieve -------------------------------------------------------------

    def instances(self, study_uid: str, series_uid: str | None = None,
                  sop_instance_uid: str | None = None) -> list[StoredInstance]:
        """The instances under a study, series or single instance, in a stable order."""
        if sop_instance_uid is not None:
            query, params = _INSTANCE_QUERY, {"study": study_uid, "series": series_uid, "sop": sop_instance_uid}
        elif series_uid is not None:
            query, params = _SERIES_QUERY, {"study": study_uid, "series": series_uid}
        else:
            query, params = _STUDY_QUERY, {"study": study_uid}
        with self.engine.connect() as conn:
            return [StoredInstance(*row) for row in conn.execute(query, params)]

    def unreferenced(self, blob_keys: list[str]) -> set[str]:
        """Those of ``blob_keys`` that no instance row points at."""
        if not blob_keys:
            return set()
        with self.engine.connect() as conn:
            used = set(conn.execute(select(instances.c.blob_key).where(instances.c.blob_key.in_(blob_keys))).scalars())
        return set(blob_keys) - used

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
