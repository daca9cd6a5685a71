"""The Worklist in the catalog (UPS-RS): workitems, subscriptions and waiting event reports.

Every change of a workitem runs in one writer transaction that holds its row (``FOR UPDATE``
on PostgreSQL; SQLite writers are serialised): the row is read, a decision function of the
caller (service.worklist.ups) says what becomes of it, and the new row, its search keys and
one event row per subscriber are written before the commit. So two claims of one workitem
cannot both win, and an event exists exactly when its change does. Events wait in
``worklist_events`` until their AE title's event channel sends them; PostgreSQL is told of
new ones by NOTIFY in the same transaction, so that channels on any node wake.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import ColumnElement, case, delete, exists, func, insert, not_, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .catalog import Catalog, retried
from .schema import (
    WORKITEM_KEYWORDS, global_subscriptions, person_name_columns, subscriber_titles, workitem_keys,
    workitem_subscriptions, workitems, worklist_events,
)
from .search import QueryError, any_of, date_time, known_keyword, name_match, uid_list, value_list

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "dicomweb_worklist"
FINAL_STATES = ("CANCELED", "COMPLETED")

# Values inside sequences that searches match, by keyword path (workitem_keys).
SEQUENCE_KEYS = (
    "ScheduledWorkitemCodeSequence.CodeValue", "ScheduledWorkitemCodeSequence.CodingSchemeDesignator",
    "ScheduledStationNameCodeSequence.CodeValue", "ScheduledStationNameCodeSequence.CodingSchemeDesignator",
    "ScheduledStationClassCodeSequence.CodeValue", "ScheduledStationGeographicLocationCodeSequence.CodeValue",
    "ScheduledHumanPerformersSequence.HumanPerformerCodeSequence.CodeValue",
    "ScheduledHumanPerformersSequence.HumanPerformerName",
    "ReferencedRequestSequence.AccessionNumber", "ReferencedRequestSequence.RequestedProcedureID",
    "ReferencedRequestSequence.StudyInstanceUID",
)
# What a search matches: the columns of workitems, the state, the UID, and the sequence keys.
COLUMN_KEYS = {**{k: k for k in WORKITEM_KEYWORDS}, "ProcedureStepState": "state", "SOPInstanceUID": "uid"}
SEARCH_KEYS = (*COLUMN_KEYS, *SEQUENCE_KEYS)


def vr_of(path: str) -> str:
    vr = dictionary_VR(tag_for_keyword(path.rsplit(".", 1)[-1]))
    return vr.split(" ")[0]


class Decision(Protocol):
    """What service.worklist.ups decides: the workitem as it becomes (None: unchanged), the
    Transaction UID that holds it, and its events (each with ``type_id`` and ``information``)."""

    model: dict | None
    transaction_uid: str | None
    events: list


class WorkitemMissing(LookupError):
    pass


class WorkitemExists(Exception):
    pass


class TitleTaken(PermissionError):
    """An AE title another peer subscribed with."""


@dataclass(frozen=True)
class Workitem:
    uid: str
    state: str
    transaction_uid: str | None
    model: dict


@dataclass(frozen=True)
class Match:
    """One search key and its value (PS3.4 C.2.2.2 matching, as QIDO-RS)."""

    path: str
    value: str


@dataclass(frozen=True)
class QueuedEvent:
    pk: int
    workitem_uid: str
    event_type: int
    information: dict


class Worklist:
    def __init__(self, catalog: Catalog, max_queued: int = 10_000) -> None:
        self.catalog = catalog
        self.max_queued = max_queued   # events kept per AE title while its channel is closed

    # -- workitems ------------------------------------------------------------------------

    def create(self, uid: str, decide: Callable[[], Decision], now: float | None = None) -> Decision:
        """Record a new workitem (``decide()`` makes it), subscribe the global subscribers its
        filters take, and queue its events; WorkitemExists when the UID is taken."""
        when = time.time() if now is None else now
        decision = decide()
        try:
            return retried(self._create, uid, decision, when)
        except IntegrityError:
            raise WorkitemExists(uid) from None

    def _create(self, uid: str, decision: Decision, when: float) -> Decision:
        with self._transaction() as conn:
            pk = conn.execute(insert(workitems).values(uid=uid, created=when, **_row(decision.model, None))
                              .returning(workitems.c.pk)).scalar_one()
            _write_keys(conn, pk, decision.model)
            for ae_title, lock, matches in conn.execute(select(global_subscriptions.c.ae_title,
                                                               global_subscriptions.c.deletion_lock,
                                                               global_subscriptions.c.filter)).all():
                if matches is not None and not _matches(conn, pk, _filter_of(matches), self.catalog.is_sqlite):
                    continue
                conn.execute(insert(workitem_subscriptions).values(workitem_uid=uid, ae_title=ae_title,
                                                                   deletion_lock=lock, created=when))
            self._queue(conn, uid, decision.events, when)
        return decision

    def create_many(self, made: Sequence[tuple[str, dict]], now: float | None = None) -> None:
        """Load workitems already made (uid, model), in one transaction: a bulk import, with no
        subscription taken and no event (bench.worklist fills its 100,000 with it)."""
        when = time.time() if now is None else now
        with self._transaction() as conn:
            pks = conn.execute(insert(workitems).returning(workitems.c.pk, sort_by_parameter_order=True),
                               [{"uid": uid, "created": when, **_row(model, None)} for uid, model in made]).scalars()
            keys = [{"workitem_pk": pk, "path": path, "value": value}
                    for pk, (_, model) in zip(pks, made) for path, value in sorted(_keys_of(model))]
            if keys:
                conn.execute(insert(workitem_keys), keys)

    def get(self, uid: str) -> Workitem | None:
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(workitems.c.uid, workitems.c.state, workitems.c.transaction_uid,
                                      workitems.c.json).where(workitems.c.uid == uid)).first()
        return None if row is None else Workitem(row.uid, row.state, row.transaction_uid, orjson.loads(row.json))

    def change(self, uid: str, decide: Callable[[Workitem, list[str]], Decision], now: float | None = None) -> Decision:
        """Run ``decide(workitem, its subscribers)`` on the workitem's row held, and commit what
        it decides with its events; WorkitemMissing when there is no such workitem."""
        when = time.time() if now is None else now
        return retried(self._change, uid, decide, when)

    def _change(self, uid: str, decide: Callable[[Workitem, list[str]], Decision], when: float) -> Decision:
        with self._transaction() as conn:
            row = conn.execute(select(workitems.c.pk, workitems.c.state, workitems.c.transaction_uid,
                                      workitems.c.json).where(workitems.c.uid == uid).with_for_update()).first()
            if row is None:
                raise WorkitemMissing(uid)
            subscribers = self._subscribers(conn, uid)
            decision = decide(Workitem(uid, row.state, row.transaction_uid, orjson.loads(row.json)), subscribers)
            if decision.model is not None:
                values = _row(decision.model, decision.transaction_uid)
                if values["state"] in FINAL_STATES and row.state not in FINAL_STATES:
                    values["finished"] = when
                conn.execute(update(workitems).where(workitems.c.pk == row.pk).values(**values))
                conn.execute(delete(workitem_keys).where(workitem_keys.c.workitem_pk == row.pk))
                _write_keys(conn, row.pk, decision.model)
            self._queue(conn, uid, decision.events, when, subscribers)
        return decision

    def search(self, matches: Sequence[Match], limit: int, offset: int) -> tuple[list[dict], bool]:
        """The workitems every match selects, in the order they were made; whether more follow."""
        statement = select(workitems.c.json).order_by(workitems.c.pk).limit(limit + 1).offset(offset)
        for condition in _conditions(matches, self.catalog.is_sqlite):
            statement = statement.where(condition)
        with self.catalog.engine.connect() as conn:
            found = [orjson.loads(text) for text in conn.execute(statement).scalars()]
        return found[:limit], len(found) > limit

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, uid: str, ae_title: str, peer: str, deletion_lock: bool,
                  initial: Callable[[Workitem], Any], now: float | None = None) -> None:
        """Subscribe ``ae_title`` to one workitem (again: its deletion lock as now asked) and
        queue the initial state report ``initial(workitem)`` gives."""
        when = time.time() if now is None else now
        retried(self._subscribe, uid, ae_title, peer, deletion_lock, initial, when)

    def _subscribe(self, uid: str, ae_title: str, peer: str, deletion_lock: bool,
                   initial: Callable[[Workitem], Any], when: float) -> int:
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            row = conn.execute(select(workitems.c.state, workitems.c.transaction_uid, workitems.c.json)
                               .where(workitems.c.uid == uid)).first()
            if row is None:
                raise WorkitemMissing(uid)
            conn.execute(delete(workitem_subscriptions).where(workitem_subscriptions.c.workitem_uid == uid,
                                                              workitem_subscriptions.c.ae_title == ae_title))
            conn.execute(insert(workitem_subscriptions).values(workitem_uid=uid, ae_title=ae_title,
                                                               deletion_lock=int(deletion_lock), created=when))
            self._queue(conn, uid, [initial(Workitem(uid, row.state, row.transaction_uid, orjson.loads(row.json)))],
                        when, [ae_title])
        return 1

    def subscribe_all(self, ae_title: str, peer: str, deletion_lock: bool, matches: Sequence[Match] | None,
                      initial: Callable[[str, str, str | None], Any], now: float | None = None) -> int:
        """A global subscription (``matches`` None) or a filtered one: every workitem made from now
        on that it takes, and every one not yet final now, with an initial state report each
        when a deletion lock is asked (``initial(uid, state, readiness)``); how many were taken now."""
        when = time.time() if now is None else now
        return retried(self._subscribe_all, ae_title, peer, deletion_lock, matches, initial, when)

    def _subscribe_all(self, ae_title: str, peer: str, deletion_lock: bool, matches: Sequence[Match] | None,
                       initial: Callable[[str, str, str | None], Any], when: float) -> int:
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            conn.execute(delete(global_subscriptions).where(global_subscriptions.c.ae_title == ae_title))
            stored = None if matches is None else orjson.dumps([[m.path, m.value] for m in matches]).decode()
            conn.execute(insert(global_subscriptions).values(ae_title=ae_title, filter=stored,
                                                             deletion_lock=int(deletion_lock), created=when))
            taken = (select(workitems.c.uid, workitems.c.state, workitems.c.InputReadinessState)
                     .where(workitems.c.state.not_in(FINAL_STATES),
                            not_(exists().where(workitem_subscriptions.c.workitem_uid == workitems.c.uid,
                                                workitem_subscriptions.c.ae_title == ae_title)))
                     .order_by(workitems.c.pk))
            for condition in _conditions(matches or (), self.catalog.is_sqlite):
                taken = taken.where(condition)
            count = 0
            for batch in _batches(conn.execute(taken), 1000):
                conn.execute(insert(workitem_subscriptions), [
                    {"workitem_uid": uid, "ae_title": ae_title, "deletion_lock": int(deletion_lock), "created": when}
                    for uid, _, _ in batch])
                if deletion_lock:
                    conn.execute(insert(worklist_events), [
                        _event_row(ae_title, uid, initial(uid, state, readiness), when) for uid, state, readiness in batch])
                count += len(batch)
            if deletion_lock and count:
                self._account(conn, Counter({ae_title: count}))
                self._notify(conn)
        return count

    def unsubscribe(self, uid: str, ae_title: str, peer: str) -> int:
        """End ``ae_title``'s subscription to one workitem (and its deletion lock), and forget the
        events of that workitem waiting for it; how many subscriptions ended."""
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            ended = conn.execute(delete(workitem_subscriptions).where(
                workitem_subscriptions.c.workitem_uid == uid, workitem_subscriptions.c.ae_title == ae_title)).rowcount
            self._forget_events(conn, ae_title, worklist_events.c.workitem_uid == uid)
            return ended

    def unsubscribe_all(self, ae_title: str, peer: str) -> int:
        """End the global subscription of ``ae_title`` and every workitem subscription it has, and
        forget every event waiting for it."""
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            ended = conn.execute(delete(global_subscriptions).where(global_subscriptions.c.ae_title == ae_title)).rowcount
            ended += conn.execute(delete(workitem_subscriptions)
                                  .where(workitem_subscriptions.c.ae_title == ae_title)).rowcount
            self._forget_events(conn, ae_title, true())
            return ended

    def _forget_events(self, conn: Connection, ae_title: str, which: ColumnElement) -> None:
        forgotten = conn.execute(delete(worklist_events).where(worklist_events.c.ae_title == ae_title, which)).rowcount
        if forgotten:
            remaining = func.coalesce(subscriber_titles.c.queued, 0) - forgotten
            conn.execute(update(subscriber_titles).where(subscriber_titles.c.ae_title == ae_title)
                         .values(queued=case((remaining > 0, remaining), else_=0)))

    def suspend(self, ae_title: str, peer: str) -> int:
        """End the global subscription alone: the workitems it took stay subscribed."""
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            return conn.execute(delete(global_subscriptions).where(global_subscriptions.c.ae_title == ae_title)).rowcount

    def subscribed_titles(self) -> list[str]:
        """Every AE title with a subscription of any kind."""
        with self.catalog.engine.connect() as conn:
            return sorted(set(conn.execute(select(global_subscriptions.c.ae_title)).scalars())
                          | set(conn.execute(select(workitem_subscriptions.c.ae_title).distinct()).scalars()))

    @staticmethod
    def _subscribers(conn: Connection, uid: str) -> list[str]:
        return list(conn.execute(select(workitem_subscriptions.c.ae_title)
                                 .where(workitem_subscriptions.c.workitem_uid == uid)
                                 .order_by(workitem_subscriptions.c.ae_title)).scalars())

    def _claim_title(self, conn: Connection, ae_title: str, peer: str) -> None:
        owner = conn.execute(select(subscriber_titles.c.peer).where(subscriber_titles.c.ae_title == ae_title)).scalar()
        if owner is None:
            conn.execute(insert(subscriber_titles).values(ae_title=ae_title, peer=peer, seen=time.time(), queued=0))
        elif owner != peer:
            raise TitleTaken(ae_title)

    # -- events -----------------------------------------------------------------------------

    def queue_for_all(self, event: Any, now: float | None = None) -> int:
        """Queue one event (an SCP status change) for every subscribed AE title."""
        titles = self.subscribed_titles()
        when = time.time() if now is None else now
        with self._transaction() as conn:
            if titles:
                conn.execute(insert(worklist_events), [_event_row(t, "", event, when) for t in titles])
                self._account(conn, Counter(titles))
                self._notify(conn)
        return len(titles)

    def _queue(self, conn: Connection, uid: str, events: Iterable[Any], when: float,
               subscribers: Sequence[str] | None = None) -> None:
        events = list(events)
        if not events:
            return
        titles = self._subscribers(conn, uid) if subscribers is None else subscribers
        rows = [_event_row(title, uid, event, when) for event in events for title in titles]
        if rows:
            conn.execute(insert(worklist_events), rows)
            self._account(conn, Counter({title: len(events) for title in titles}))
            self._notify(conn)

    def _account(self, conn: Connection, added: Counter) -> None:
        """Count what was just queued for each title, and drop its oldest events beyond the newest
        ``max_queued`` (logged): a title that never connects cannot grow the catalog without bound."""
        for count in set(added.values()):
            titles = [title for title, n in added.items() if n == count]
            conn.execute(update(subscriber_titles).where(subscriber_titles.c.ae_title.in_(titles))
                         .values(queued=func.coalesce(subscriber_titles.c.queued, 0) + count))
        over = conn.execute(select(subscriber_titles.c.ae_title, subscriber_titles.c.queued)
                            .where(subscriber_titles.c.ae_title.in_(list(added)),
                                   subscriber_titles.c.queued > self.max_queued)).all()
        for title, queued in over:
            oldest_kept = (select(worklist_events.c.pk).where(worklist_events.c.ae_title == title)
                           .order_by(worklist_events.c.pk.desc()).offset(self.max_queued - 1).limit(1)).scalar_subquery()
            dropped = conn.execute(delete(worklist_events).where(worklist_events.c.ae_title == title,
                                                                 worklist_events.c.pk < oldest_kept)).rowcount
            conn.execute(update(subscriber_titles).where(subscriber_titles.c.ae_title == title)
                         .values(queued=queued - dropped))
            log.warning("worklist: the %d oldest events waiting for AE title %s were dropped: it has no channel "
                        "open and more than %d wait (DICOMWEB_WORKLIST_QUEUED_EVENTS)", dropped, title, self.max_queued)

    def _notify(self, conn: Connection) -> None:
        if not self.catalog.is_sqlite:   # delivered at commit, to the listeners of every node
            conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")

    def open_channel(self, ae_title: str, peer: str, channel: str) -> None:
        """Make ``channel`` the one delivering ``ae_title``'s events (TitleTaken when another peer
        owns it), and drop what waits beyond the newest ``max_queued``."""
        with self._transaction() as conn:
            self._claim_title(conn, ae_title, peer)
            keep = (select(worklist_events.c.pk).where(worklist_events.c.ae_title == ae_title)
                    .order_by(worklist_events.c.pk.desc()).offset(self.max_queued).limit(1)).scalar_subquery()
            conn.execute(delete(worklist_events).where(worklist_events.c.ae_title == ae_title,
                                                       worklist_events.c.pk <= keep))
            waiting = (select(func.count()).select_from(worklist_events)
                       .where(worklist_events.c.ae_title == ae_title).scalar_subquery())
            conn.execute(update(subscriber_titles).where(subscriber_titles.c.ae_title == ae_title)
                         .values(channel=channel, seen=time.time(), queued=waiting))

    def channel_alive(self, ae_title: str, channel: str, closed: bool = False) -> None:
        """``channel`` is still open (or has just closed): the title is seen now, which keeps the
        sweep from forgetting it."""
        with self.catalog.unsynced_transaction() as conn:
            conn.execute(update(subscriber_titles)
                         .where(subscriber_titles.c.ae_title == ae_title, subscriber_titles.c.channel == channel)
                         .values(seen=time.time(), **({"channel": None} if closed else {})))

    def channel_of(self, ae_title: str) -> str | None:
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(subscriber_titles.c.channel)
                                .where(subscriber_titles.c.ae_title == ae_title)).scalar()

    def waiting(self, ae_title: str, limit: int = 100) -> list[QueuedEvent]:
        """The oldest events waiting for ``ae_title``, in order."""
        statement = (select(worklist_events.c.pk, worklist_events.c.workitem_uid, worklist_events.c.event_type,
                            worklist_events.c.information)
                     .where(worklist_events.c.ae_title == ae_title).order_by(worklist_events.c.pk).limit(limit))
        with self.catalog.engine.connect() as conn:
            return [QueuedEvent(pk, uid, kind, orjson.loads(info)) for pk, uid, kind, info in conn.execute(statement)]

    def sent(self, ae_title: str, pks: Sequence[int]) -> None:
        with self._transaction() as conn:
            self._forget_events(conn, ae_title, worklist_events.c.pk.in_(list(pks)))

    def latest_event(self) -> int:
        """The newest event's number (0 when none waits): what a polling bell watches."""
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(func.max(worklist_events.c.pk))).scalar() or 0

    # -- upkeep -----------------------------------------------------------------------------

    def sweep(self, finished_before: float, events_before: float) -> tuple[int, int]:
        """Remove workitems final since before ``finished_before`` that no deletion lock holds, and
        events waiting since before ``events_before``; how many of each."""
        with self._transaction() as conn:
            locked = exists().where(workitem_subscriptions.c.workitem_uid == workitems.c.uid,
                                    workitem_subscriptions.c.deletion_lock == 1)
            gone = list(conn.execute(select(workitems.c.pk, workitems.c.uid).where(
                workitems.c.finished < finished_before, not_(locked)).limit(10_000)).all())
            pks, uids = [pk for pk, _ in gone], [uid for _, uid in gone]
            if pks:
                conn.execute(delete(workitem_keys).where(workitem_keys.c.workitem_pk.in_(pks)))
                conn.execute(delete(workitem_subscriptions).where(workitem_subscriptions.c.workitem_uid.in_(uids)))
                conn.execute(delete(workitems).where(workitems.c.pk.in_(pks)))
            events = conn.execute(delete(worklist_events).where(worklist_events.c.created < events_before)).rowcount
            if events:
                waiting = (select(func.count()).select_from(worklist_events)
                           .where(worklist_events.c.ae_title == subscriber_titles.c.ae_title).scalar_subquery())
                conn.execute(update(subscriber_titles).values(queued=waiting))
        return len(pks), events

    def forget_unseen(self, before: float) -> list[str]:
        """Forget the AE titles whose channel was last seen (or that were claimed, never connecting)
        before ``before``: their subscriptions, their waiting events, the titles; which they were."""
        with self._transaction() as conn:
            conn.execute(update(subscriber_titles).where(subscriber_titles.c.seen.is_(None))
                         .values(seen=time.time()))   # titles of a catalog older than ``seen``: a full wait
            titles = list(conn.execute(select(subscriber_titles.c.ae_title)
                                       .where(subscriber_titles.c.seen < before)).scalars())
            for batch in _batches(((t,) for t in titles), 500):
                names = [t for (t,) in batch]
                conn.execute(delete(global_subscriptions).where(global_subscriptions.c.ae_title.in_(names)))
                conn.execute(delete(workitem_subscriptions).where(workitem_subscriptions.c.ae_title.in_(names)))
                conn.execute(delete(worklist_events).where(worklist_events.c.ae_title.in_(names)))
                conn.execute(delete(subscriber_titles).where(subscriber_titles.c.ae_title.in_(names)))
        if titles:
            log.info("worklist: forgot %d AE title(s) no event channel was seen for: %s", len(titles),
                     ", ".join(titles[:20]))
        return titles

    def _transaction(self) -> Any:
        return self.catalog.writer_transaction()


def _batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _event_row(ae_title: str, uid: str, event: Any, when: float) -> dict:
    return {"ae_title": ae_title, "workitem_uid": uid, "event_type": event.type_id,
            "information": orjson.dumps(event.information).decode(), "created": when}


# -- the row of a workitem --------------------------------------------------------------------

def _value(model: dict, keyword: str) -> Any:
    element = model.get(f"{tag_for_keyword(keyword):08X}")
    listed = element.get("Value") if isinstance(element, dict) else None
    if not listed:
        return None
    value = listed[0]
    if isinstance(value, dict):   # PN as DICOM JSON: its groups joined the way DICOM writes them
        groups = [value.get(g) or "" for g in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=") or None
    return str(value)[:400] if value is not None else None


def _row(model: dict, transaction_uid: str | None) -> dict:
    values = {keyword: _value(model, keyword) for keyword in WORKITEM_KEYWORDS}
    values.update(person_name_columns("PatientName", values["PatientName"]))
    values.update(state=_value(model, "ProcedureStepState"), transaction_uid=transaction_uid,
                  json=orjson.dumps(model).decode())
    return values


def _key_values(model: dict, path: list[str]) -> Iterator[str]:
    element = model.get(f"{tag_for_keyword(path[0]):08X}")
    for value in (element.get("Value") or []) if isinstance(element, dict) else []:
        if len(path) > 1:
            if isinstance(value, dict):
                yield from _key_values(value, path[1:])
        elif isinstance(value, dict):
            alphabetic = value.get("Alphabetic")
            if alphabetic:
                yield str(alphabetic)[:400].upper()
        elif value is not None:
            yield str(value)[:400]


def _keys_of(model: dict) -> set[tuple[str, str]]:
    return {(path, value) for path in SEQUENCE_KEYS for value in _key_values(model, path.split("."))}


def _write_keys(conn: Connection, pk: int, model: dict) -> None:
    rows = _keys_of(model)
    if rows:
        conn.execute(insert(workitem_keys), [{"workitem_pk": pk, "path": p, "value": v} for p, v in sorted(rows)])


# -- matching ---------------------------------------------------------------------------------

def _filter_of(stored: str) -> list[Match]:
    return [Match(path, value) for path, value in orjson.loads(stored)]


def _matches(conn: Connection, pk: int, matches: Sequence[Match], sqlite: bool) -> bool:
    statement = select(workitems.c.pk).where(workitems.c.pk == pk)
    for condition in _conditions(matches, sqlite):
        statement = statement.where(condition)
    return conn.execute(statement).first() is not None


def _conditions(matches: Iterable[Match], sqlite: bool) -> Iterator[ColumnElement]:
    for m in matches:
        condition = match_condition(m, sqlite)
        if condition is not None:
            yield condition


def match_condition(m: Match, sqlite: bool) -> ColumnElement | None:
    """The SQL condition of one key (QueryError for a value its VR cannot hold), or None for
    universal matching."""
    if m.value in ("", "*"):
        return None
    vr = vr_of(m.path)
    if m.path in COLUMN_KEYS:
        return _matched(workitems.c[COLUMN_KEYS[m.path]], m.path, vr, m.value, sqlite,
                        workitems.c.PatientName_upper, workitems.c.PatientName_groups)
    value = workitem_keys.c.value
    condition = _matched(value, m.path, vr, m.value.upper() if vr == "PN" else m.value, sqlite, value, value)
    # IN, not a correlated EXISTS: SQLite would probe every workitem in turn for a rare value;
    # this reads the (path, value) index once. PostgreSQL plans both as the same semi-join.
    return workitems.c.pk.in_(select(workitem_keys.c.workitem_pk).where(workitem_keys.c.path == m.path, condition))


def _matched(column: ColumnElement, keyword: str, vr: str, value: str, sqlite: bool,
             name_upper: ColumnElement, name_groups: ColumnElement) -> ColumnElement:
    if vr == "UI":
        uids = uid_list(keyword, value)
        return column == uids[0] if len(uids) == 1 else column.in_(uids)
    if vr in ("DA", "TM", "DT"):
        return date_time(column, keyword, vr, value)
    if vr == "PN":
        return name_match(name_upper, name_groups, value, sqlite)
    found = value_list(value)
    return any_of(column, found, sqlite) if found else true()


def searchable(key: str) -> str | None:
    """The keyword path a search key names (keywords or tags, dotted for sequences), when the
    Worklist matches on it; None for a DICOM attribute it does not match on. QueryError for a
    key that names no attribute."""
    parts = []
    for part in key.split("."):
        keyword = known_keyword(part)
        if keyword is None:
            raise QueryError(f"{key[:80]!r} names no DICOM attribute")
        parts.append(keyword)
    path = ".".join(parts)
    return path if path in SEARCH_KEYS else None

