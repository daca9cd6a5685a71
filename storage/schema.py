"""The catalog's tables, and the derived search columns person names need.

Attribute columns are named by their DICOM keyword so that search maps a query
key to a column through a whitelist. On PostgreSQL, text columns use the "C"
collation so that B-tree indexes serve prefix LIKE patterns, as SQLite's
indexes serve prefix GLOB patterns.
"""
from __future__ import annotations

import re
from typing import Iterable

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table
from sqlalchemy import Text as LargeText

from .dataset import INSTANCE_KEYWORDS, INTEGER_KEYWORDS, PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS

metadata = MetaData()

PERSON_NAME_KEYWORDS = ("PatientName", "ReferringPhysicianName")


def Text(length: int = 400) -> String:  # noqa: N802 - reads like a type
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _attribute_columns(keywords: Iterable[str]) -> list[Column]:
    columns = []
    for keyword in keywords:
        columns.append(Column(keyword, Integer if keyword in INTEGER_KEYWORDS else Text()))
        if keyword in PERSON_NAME_KEYWORDS:
            # Upper-cased alphabetic group (indexed, for prefix matches) and all groups as =A=I=P=.
            columns.append(Column(f"{keyword}_upper", Text()))
            columns.append(Column(f"{keyword}_groups", Text(1200)))
    return columns


patients = Table(
    "patients", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_key", Text(200), nullable=False, unique=True),
    *_attribute_columns(PATIENT_KEYWORDS),
    Index("ix_patients_id", "PatientID"),
    Index("ix_patients_name", "PatientName_upper"),
)

studies = Table(
    "studies", metadata,
    Column("pk", Integer, primary_key=True),
    Column("StudyInstanceUID", Text(64), nullable=False, unique=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False, index=True),
    *_attribute_columns(STUDY_KEYWORDS),
    # Kept current at ingest (storage.catalog), so searches return them without aggregating.
    Column("NumberOfStudyRelatedSeries", Integer, nullable=False, server_default="0"),
    Column("NumberOfStudyRelatedInstances", Integer, nullable=False, server_default="0"),
    Column("ModalitiesInStudy", Text(200)),          # backslash-separated, sorted
    # The patient's upper-cased alphabetic name, copied here so that name searches for
    # studies read one index and no patient rows.
    Column("patient_name_upper", Text()),
    Column("created_at", Float, nullable=False),
    Index("ix_studies_date", "StudyDate", "StudyTime"),
    Index("ix_studies_accession", "AccessionNumber"),
    Index("ix_studies_referring", "ReferringPhysicianName_upper"),
    Index("ix_studies_patient_name", "patient_name_upper"),
)

series = Table(
    "series", metadata,
    Column("pk", Integer, primary_key=True),
    Column("SeriesInstanceUID", Text(64), nullable=False, unique=True),
    Column("study_pk", Integer, ForeignKey("studies.pk"), nullable=False),
    *_attribute_columns(SERIES_KEYWORDS),
    Column("NumberOfSeriesRelatedInstances", Integer, nullable=False, server_default="0"),
    Index("ix_series_study_modality", "study_pk", "Modality"),
)

instances = Table(
    "instances", metadata,
    Column("pk", Integer, primary_key=True),
    Column("SOPInstanceUID", Text(64), nullable=False, unique=True),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False),
    Column("SOPClassUID", Text(64), nullable=False),
    Column("TransferSyntaxUID", Text(64), nullable=False),
    *_attribute_columns(INSTANCE_KEYWORDS),
    Column("size", BigInteger, nullable=False),
    Column("sha256", Text(64), nullable=False),
    Column("blob_key", Text(400), nullable=False, index=True),
    Column("stored_at", Float, nullable=False),
    # The upstream a facade copied this instance from (its cache, service.facade.upstreams), or NULL.
    Column("upstream", Text(64)),
    Index("ix_instances_series_order", "series_pk", "InstanceNumber"),
)

# Each instance's DICOM JSON metadata (storage.metadata), kept apart from the row that
# search and retrieve read so those stay small.
instance_metadata = Table(
    "instance_metadata", metadata,
    Column("instance_pk", Integer, ForeignKey("instances.pk"), primary_key=True),
    Column("json", LargeText, nullable=False),
    # Where a native (not encapsulated) pixel data value is in the blob, for frame reads.
    Column("pixel_offset", BigInteger),
    Column("pixel_length", BigInteger),
    # Encapsulated pixel data: each frame's fragments as JSON [[[offset, length], …], …].
    Column("fragments", LargeText),
)

# Components of person names, for fuzzy matching: one row per (name, upper-cased component).
# Patient names are indexed twice: against the patient (for /patients) and against each of
# its studies (STUDY_PATIENT_NAME), so that study searches go from tokens to studies directly.
person_name_tokens = Table(
    "person_name_tokens", metadata,
    Column("keyword", Text(64), nullable=False),
    Column("token", Text(64), nullable=False),
    Column("owner_pk", Integer, nullable=False),
    Index("ix_person_name_tokens", "keyword", "token", "owner_pk", unique=True),
)

STUDY_PATIENT_NAME = "PatientName@study"

_TOKEN_SPLIT = re.compile(r"[\^= ,\-]+")


def person_name_columns(keyword: str, value: str | None) -> dict[str, str | None]:
    """The derived search columns of a person name attribute."""
    if not value:
        return {f"{keyword}_upper": None, f"{keyword}_groups": None}
    groups = value.upper().split("=")
    return {f"{keyword}_upper": groups[0], f"{keyword}_groups": "=" + "=".join(groups) + "="}


def name_components(value: str) -> list[str]:
    """Upper-cased components (family, given, middle…) of every group of a person name,
    split the same way for the index and for fuzzy queries."""
    return [token for token in _TOKEN_SPLIT.split(value.upper()) if token]


def person_name_tokens_of(value: str | None) -> set[str]:
    """The tokens a person name is indexed under for fuzzy matching."""
    return {token[:64] for token in name_components(value)} if value else set()


# Stores in progress (StoreBatch, before its catalog commit) and the blob directories (a
# series') they are writing in: the sweep leaves the blobs under them however old their files
# are, until a mark is older than its grace (its store died). One mark a batch and directory,
# not a blob, so that marking costs a transaction per series a batch writes, not per instance.
pending_blobs = Table(
    "pending_blobs", metadata,
    Column("blob_prefix", Text(400), primary_key=True),
    Column("batch", Text(32), primary_key=True),
    Column("since", Float, nullable=False),
)

# Viewer sessions (service.sessions): the SHA-256 of a session's token (the cookie holds the
# token, signed), whose key it was opened with (a changed or revoked key ends it), when it
# began and was last used (absolute and idle expiry), and whether it was signed out.
viewer_sessions = Table(
    "viewer_sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("peer", Text(64), nullable=False),
    Column("key_sha256", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("seen", Float, nullable=False),
    Column("ended", Float),
)

# Blobs of deleted instances, waiting to be removed (Archive.remove_doomed): the catalog commit of
# a delete is its commit point; the blobs go after it, retried until gone. A store that would
# write one of these keys again writes another (StoreBatch), so removing never races a new write.
doomed_blobs = Table(
    "doomed_blobs", metadata,
    Column("blob_key", Text(400), primary_key=True),
    Column("since", Float, nullable=False),
)

# Instances rejected (IHE IOCM: a Rejection Note, service.store.reject_rs): out of every resource,
# their blobs kept (the sweep leaves them) until `dicomweb purge` removes them.
rejected_instances = Table(
    "rejected_instances", metadata,
    Column("pk", Integer, primary_key=True),
    Column("StudyInstanceUID", Text(64), nullable=False),
    Column("SeriesInstanceUID", Text(64), nullable=False),
    Column("SOPInstanceUID", Text(64), nullable=False),
    Column("SOPClassUID", Text(64)),
    Column("blob_key", Text(400), nullable=False, index=True),
    Column("reason", Text(64), nullable=False),         # the rejection code, as code^scheme
    Column("note", Text(64), nullable=False),           # the SOP Instance UID of the Rejection Note
    Column("rejected_at", Float, nullable=False, index=True),
)

# Storage Commitment results (PS3.18 chapter 13, service.store.commitment_rs), by Transaction
# UID, kept for the peer that asked to read again; forgotten by the sweep after a retention time.
commitment_results = Table(
    "commitment_results", metadata,
    Column("transaction_uid", Text(64), primary_key=True),
    Column("peer", Text(64)),
    Column("created", Float, nullable=False, index=True),
    Column("result", LargeText, nullable=False),          # the Storage Commitment result as DICOM JSON
)

# -- the Worklist (UPS-RS, storage.worklist) ----------------------------------------------------

WORKITEM_KEYWORDS = ("InputReadinessState", "ScheduledProcedureStepPriority", "ProcedureStepLabel", "WorklistLabel",
                     "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime", "PatientName", "PatientID",
                     "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "AdmissionID", "StudyInstanceUID")

# One row a workitem: its state and the Transaction UID that holds it (never shown), the
# attributes searches match as columns, its whole data set as DICOM JSON, and when it
# reached a final state (the sweep removes it some time after, unless a deletion lock holds it).
workitems = Table(
    "workitems", metadata,
    Column("pk", Integer, primary_key=True),
    Column("uid", Text(64), nullable=False, unique=True),
    Column("state", Text(16), nullable=False),
    Column("transaction_uid", Text(64)),
    *(Column(keyword, Text(64 if keyword.endswith(("DateTime", "Date")) else 400)) for keyword in WORKITEM_KEYWORDS),
    Column("PatientName_upper", Text()),
    Column("PatientName_groups", Text(1200)),
    Column("created", Float, nullable=False),
    Column("finished", Float, index=True),
    Column("json", LargeText, nullable=False),
    Index("ix_workitems_state", "state", "pk"),
    Index("ix_workitems_start", "ScheduledProcedureStepStartDateTime"),
    Index("ix_workitems_patient", "PatientID"),
    Index("ix_workitems_name", "PatientName_upper"),
)

# Values inside sequences that searches match (a code's value, a request's accession number),
# one row each, by keyword path ("ScheduledStationNameCodeSequence.CodeValue").
workitem_keys = Table(
    "workitem_keys", metadata,
    Column("workitem_pk", Integer, ForeignKey("workitems.pk", ondelete="CASCADE"), primary_key=True),
    Column("path", Text(200), primary_key=True),
    Column("value", Text(), primary_key=True),
    Index("ix_workitem_keys_value", "path", "value", "workitem_pk"),
)

# Subscriptions of an AE title to one workitem (made directly, or by a global subscription).
workitem_subscriptions = Table(
    "workitem_subscriptions", metadata,
    Column("workitem_uid", Text(64), primary_key=True),
    Column("ae_title", Text(16), primary_key=True, index=True),
    Column("deletion_lock", Integer, nullable=False),
    Column("created", Float, nullable=False),
)

# Global subscriptions: every workitem made from now on (filter NULL), or those a filter
# matches (the filter as (path, value) pairs in JSON). Suspending removes the row alone.
global_subscriptions = Table(
    "global_subscriptions", metadata,
    Column("ae_title", Text(16), primary_key=True),
    Column("filter", LargeText),
    Column("deletion_lock", Integer, nullable=False),
    Column("created", Float, nullable=False),
)

# Who an AE title belongs to: the peer that first subscribed with it; no other peer may use
# it, nor open its event channel. ``channel`` names the event channel now delivering its
# events (a newer one replaces an older, on any node), NULL when none is open; ``seen`` is when
# the title was first claimed, or a channel of it last opened, closed or was alive (the sweep
# forgets a title unseen for long, with its subscriptions and events); ``queued`` counts its
# waiting events, so that the bound on them is kept as they are queued.
subscriber_titles = Table(
    "subscriber_titles", metadata,
    Column("ae_title", Text(16), primary_key=True),
    Column("peer", Text(64), nullable=False),
    Column("channel", Text(64)),
    Column("seen", Float),
    Column("queued", Integer),
)

# Event reports waiting for their subscriber, in order (pk); deleted once sent on its channel.
worklist_events = Table(
    "worklist_events", metadata,
    Column("pk", Integer, primary_key=True),
    Column("ae_title", Text(16), nullable=False),
    Column("workitem_uid", Text(64), nullable=False),
    Column("event_type", Integer, nullable=False),
    Column("information", LargeText, nullable=False),
    Column("created", Float, nullable=False, index=True),
    Index("ix_worklist_events_ae", "ae_title", "pk"),
)
# Failed sign-ins to the viewer by client address, over the last minute: counted here so that
# every worker and node sees the same count (service.sessions.LoginFailures).
signin_failures = Table(
    "signin_failures", metadata,
    Column("pk", Integer, primary_key=True),
    Column("address", Text(64), nullable=False),
    Column("at", Float, nullable=False, index=True),
    Index("ix_signin_failures_address", "address", "at"),
)

WORKLIST_TABLES = ("workitems", "workitem_keys", "workitem_subscriptions", "global_subscriptions",
                   "subscriber_titles", "worklist_events")
