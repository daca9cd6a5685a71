"""Failed sign-ins to the viewer by client address, kept in the catalog so that every worker
process and every node counts the same (service.sessions.LoginFailures reads them). A row a
failure; rows older than the window are forgotten as new ones are written, so a flood from
many addresses costs rows for one window only."""
from __future__ import annotations

from sqlalchemy import delete, insert, select

from .catalog import Catalog
from .schema import signin_failures


class SigninFailures:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def newest(self, address: str, since: float, limit: int) -> list[float]:
        """When ``address`` last failed after ``since``: at most ``limit`` times, newest first."""
        statement = (select(signin_failures.c.at)
                     .where(signin_failures.c.address == address, signin_failures.c.at > since)
                     .order_by(signin_failures.c.at.desc()).limit(limit))
        with self.catalog.engine.connect() as conn:
            return list(conn.execute(statement).scalars())

    def record(self, address: str, at: float, forget_before: float) -> None:
        """A failure of ``address`` at ``at``; every failure before ``forget_before`` forgotten.
        Not synced to disk: a crash that loses the last failures gives a few tries back."""
        with self.catalog.unsynced_transaction() as conn:
            conn.execute(delete(signin_failures).where(signin_failures.c.at < forget_before))
            conn.execute(insert(signin_failures).values(address=address[:64], at=at))
