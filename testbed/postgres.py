"""A catalog URL on a fresh schema of the local PostgreSQL ``test`` database, dropped afterwards."""
from __future__ import annotations

import socket
import uuid
from contextlib import contextmanager
from typing import Iterator

BASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def schema(prefix: str = "t") -> Iterator[str]:
    """RuntimeError where no server listens (the tests skip or fail on it, as they must)."""
    if not reachable():
        raise RuntimeError("PostgreSQL is not reachable on 127.0.0.1:5432")
    import sqlalchemy

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(BASE_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield f"{BASE_URL}?options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()
