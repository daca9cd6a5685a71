"""Versioned catalog migrations: ``dicomweb migrate`` applies those a catalog lacks, in order,
each in its own transaction with its version recorded, so running it again does nothing.

A fresh catalog is made at the latest version when the server first starts; an existing
one that is behind makes the server refuse to start until it is migrated (several app
nodes must not race to change a shared catalog). A migration is a function of a
connection, appended below with the next number; never edit one that has shipped.
"""
from __future__ import annotations

from typing import Callable

from sqlalchemy import Column, Integer, MetaData, Table, Text, inspect, select
from sqlalchemy.engine import Connection, Engine

from .schema import WORKLIST_TABLES, metadata

versions = MetaData()
schema_version = Table("schema_version", versions, Column("version", Integer, primary_key=True),
                       Column("description", Text))


def _initial(conn: Connection) -> None:
    metadata.create_all(conn)


def _upstream_column(conn: Connection) -> None:
    if "upstream" not in {c["name"] for c in inspect(conn).get_columns("instances")}:
        conn.exec_driver_sql("ALTER TABLE instances ADD COLUMN upstream VARCHAR(64)")


def _title_columns(conn: Connection) -> None:
    present = {c["name"] for c in inspect(conn).get_columns("subscriber_titles")}
    for name, kind in (("seen", "FLOAT"), ("queued", "INTEGER")):
        if name not in present:
            conn.exec_driver_sql(f"ALTER TABLE subscriber_titles ADD COLUMN {name} {kind}")


def _pending_blobs(conn: Connection) -> None:
    from .schema import pending_blobs

    pending_blobs.create(conn, checkfirst=True)


def _table(*names: str) -> Callable[[Connection], None]:
    """A migration that adds the tables ``names`` of the schema as they are defined there."""
    def create(conn: Connection) -> None:
        for name in names:
            metadata.tables[name].create(conn, checkfirst=True)
    return create


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "patients, studies, series, instances, instance metadata and name tokens", _initial),
    (2, "instances.upstream: the upstream a facade's cached copy came from", _upstream_column),
    (3, "pending_blobs: blobs of stores in progress, which the sweep leaves", _pending_blobs),
    (4, "viewer_sessions: people signed in to the viewer", _table("viewer_sessions")),
    (5, "doomed_blobs: blobs of deleted instances, removed after the delete commits", _table("doomed_blobs")),
    (6, "rejected_instances: instances hidden by a Rejection Note until purged", _table("rejected_instances")),
    (7, "commitment_results: Storage Commitment results by Transaction UID", _table("commitment_results")),
    (8, "the Worklist: workitems, their search keys, subscriptions, AE titles and waiting events",
     _table(*WORKLIST_TABLES)),
    (9, "signin_failures: failed sign-ins by address, seen by every worker", _table("signin_failures")),
    (10, "subscriber_titles.seen and .queued: when an AE title's channel was last seen, how many events wait",
     _title_columns),
]
LATEST = MIGRATIONS[-1][0]
# Columns later migrations add: a catalog made before versions were kept lacks them and is still version 1.
ADDED_LATER = {"instances.upstream", "pending_blobs", "viewer_sessions", "doomed_blobs",
               "rejected_instances", "commitment_results", *WORKLIST_TABLES, "signin_failures"}


def current(conn: Connection) -> int:
    """The catalog's version: 0 for an empty database; a catalog made before versions were
    recorded counts as version 1 when it has every column of version 1."""
    tables = set(inspect(conn).get_table_names())
    if "schema_version" in tables:
        return conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())).scalar() or 0
    if "instances" not in tables:
        return 0
    return 1 if not set(missing_columns(conn)) - ADDED_LATER else 0


def missing_columns(conn: Connection) -> list[str]:
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    missing = []
    for table in metadata.sorted_tables:
        if table.name not in tables:
            missing.append(table.name)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{column.name}" for column in table.columns if column.name not in present]
    return missing


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations the catalog lacks; return what was done."""
    done = []
    with engine.begin() as conn:
        start = current(conn)
        versions.create_all(conn)
        if start and conn.execute(select(schema_version.c.version)).first() is None:
            conn.execute(schema_version.insert(), [{"version": v, "description": d} for v, d, _ in MIGRATIONS
                                                   if v <= start])
            done.append(f"recorded version {start} of a catalog made before versions were kept")
    for version, description, step in MIGRATIONS:
        with engine.begin() as conn:
            if current(conn) >= version:
                continue
            step(conn)
            conn.execute(schema_version.insert(), {"version": version, "description": description})
            done.append(f"{version}: {description}")
    with engine.connect() as conn:
        if missing := missing_columns(conn):
            raise RuntimeError(f"after migrating, the catalog still lacks {', '.join(missing[:5])}: "
                               "it was made by a development version no migration knows")
    return done
