"""UPS-RS, the Worklist service (PS3.18 chapter 11): create, retrieve, update, change the state
of, request the cancellation of, search and subscribe to workitems. The rules are
``ups``'s; the catalog holds the row while they run (``storage.worklist``); a change's events
are queued in the same commit and the event channels are woken after it (``channel``)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable

from flask import Response, request

from storage.search import QueryError
from pydicom.uid import generate_uid
from storage.worklist import Match, TitleTaken, Workitem, WorkitemExists, WorkitemMissing, searchable

from ..auth import PEER_ENVIRON_KEY
from ..errors import BadRequest, Conflict, DicomWebError, Forbidden, NotFound
from ..search.qido_params import MAX_LIST_VALUES, integer
from ..web import (
    base_url, dataset_payload, dataset_response, multipart_response, require_uids, settings, single_dataset_as_xml,
    wants_xml, warning,
)
from ..wire import multipart
from ..wire.dicom_xml import json_to_xml
from ..wire.media import DICOM_XML
from . import ae_title, channel, ups, worklist

MAX_WORKITEM_BYTES = 1 << 20       # a workitem's data set, or an update of it
CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}


def now_dt() -> str:
    """The time now as a DT value (UTC, with its offset)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S.%f+0000")


def _peer() -> str:
    return request.environ.get(PEER_ENVIRON_KEY) or ""


def _refused(refusal: ups.Refused) -> DicomWebError:
    error = {400: BadRequest, 404: NotFound, 409: Conflict}[refusal.status](
        refusal.message, {"Warning": warning(refusal.warning)})
    return error


def _answered(response: Response, warnings: list[str]) -> Response:
    for text in warnings:
        response.headers.add("Warning", warning(text))
    return response


def _url(uid: str) -> str:
    return f"{base_url()}/workitems/{uid}"


# -- workitems -------------------------------------------------------------------------------

def create() -> Response:
    """POST /workitems{?workitem} (§11.4): 201 with the workitem's Location."""
    uid = _target_uid()
    model = dataset_payload("a workitem", MAX_WORKITEM_BYTES)
    own = ups.first(model, "SOPInstanceUID")
    uid = uid or (own if isinstance(own, str) else None) or generate_uid(prefix=None)
    require_uids(**{"Workitem UID": uid})
    if uid in ups.WELL_KNOWN:
        raise BadRequest(f"{uid} is the well-known UID of the Worklist, not a workitem's")
    now = now_dt()
    try:
        decision = worklist().create(uid, lambda: ups.create(model, uid, now))
    except ups.Refused as refusal:
        raise _refused(refusal) from None
    except WorkitemExists:
        raise Conflict(f"the workitem {uid} exists already", {"Warning": warning("The workitem exists already.")})
    channel.rung()
    response = Response(status=201)
    response.headers["Location"] = response.headers["Content-Location"] = _url(uid)
    return _answered(response, decision.warnings)


def _target_uid() -> str | None:
    """The workitem UID of a create's query: ``?{uid}`` as PS3.18 writes it, or ``workitem=``
    (or ``AffectedSOPInstanceUID=``, as earlier editions named it)."""
    for name in ("workitem", "AffectedSOPInstanceUID"):
        if name in request.args:
            return request.args[name]
    bare = [key for key, value in request.args.items(multi=True) if not value and key not in CONTROL]
    if len(bare) > 1:
        raise BadRequest("the query names more than one workitem UID")
    return bare[0] if bare else None


# How clients name the Transaction UID of an update in the query, besides ``?{uid}`` as PS3.18
# writes it: ``transaction=`` (§11.6.1), ``Transaction-uid=`` (dcm4chee), the keyword, the tag.
TRANSACTION_PARAMETERS = ("transaction", "transaction-uid", "transactionuid", "00081195")


def _transaction_uid() -> str | None:
    """The Transaction UID an update's query names, however it names it; 400 for two."""
    named = {value for key, value in request.args.items(multi=True) if key.lower() in TRANSACTION_PARAMETERS}
    named |= {key for key, value in request.args.items(multi=True)
              if not value and key not in CONTROL and key.lower() not in TRANSACTION_PARAMETERS}
    if len(named) > 1:
        raise BadRequest("the query names more than one Transaction UID",
                         {"Warning": warning(ups.TRANSACTION_INCORRECT)})
    return named.pop() if named else None


def retrieve(workitem: str) -> Response:
    """GET /workitems/{workitem} (§11.5): the workitem, never its Transaction UID."""
    require_uids(**{"Workitem UID": workitem})
    as_xml = single_dataset_as_xml("a workitem")
    found = worklist().get(workitem)
    if found is None:
        raise NotFound(f"no workitem {workitem}")
    return dataset_response(ups.without_transaction(found.model), as_xml)


def update(workitem: str) -> Response:
    """POST /workitems/{workitem}{?transaction} (§11.6); the Transaction UID may also be in the
    data set (ups.update)."""
    require_uids(**{"Workitem UID": workitem})
    given = _transaction_uid()
    if given is not None:
        require_uids(**{"Transaction UID": given})
    changes = dataset_payload("a workitem update", MAX_WORKITEM_BYTES)
    now = now_dt()
    decision = _change(workitem, lambda item, _: ups.update(item.model, item.transaction_uid, given, changes, now))
    response = Response(status=200)
    response.headers["Content-Location"] = _url(workitem)
    return _answered(response, decision.warnings)


def change_state(workitem: str) -> Response:
    """PUT /workitems/{workitem}/state (§11.7)."""
    require_uids(**{"Workitem UID": workitem})
    asked = dataset_payload("a state change", MAX_WORKITEM_BYTES)
    now = now_dt()
    decision = _change(workitem, lambda item, _: ups.change_state(item.model, item.transaction_uid, asked, now))
    response = Response(status=200)
    response.headers["Content-Location"] = _url(workitem)
    return _answered(response, decision.warnings)


def request_cancel(workitem: str) -> Response:
    """POST /workitems/{workitem}/cancelrequest (§11.8): 202, the request taken."""
    require_uids(**{"Workitem UID": workitem})
    asked = dataset_payload("a cancellation request", MAX_WORKITEM_BYTES, optional=True) or {}
    now = now_dt()
    decision = _change(workitem, lambda item, subscribers: ups.request_cancel(item.model, asked, now, bool(subscribers)))
    response = Response(status=202)
    response.headers["Content-Location"] = _url(workitem)
    return _answered(response, decision.warnings)


def _change(workitem: str, decide: Callable[[Workitem, list[str]], ups.Outcome]) -> ups.Outcome:
    try:
        decision = worklist().change(workitem, decide)
    except ups.Refused as refusal:
        raise _refused(refusal) from None
    except WorkitemMissing:
        raise NotFound(f"no workitem {workitem}") from None
    if decision.events:
        channel.rung()
    return decision


def search() -> Response:
    """GET /workitems{?query*} (§11.9), matching as QIDO-RS does (PS3.4 C.2.2.2); each result
    the whole workitem but its Transaction UID; 200 with no result when nothing matches."""
    as_xml = wants_xml("workitems")
    max_results = settings().qido_max_results
    try:
        matches, limit, offset, warnings = parse_search(request.args.items(multi=True), max_results)
        found, more = worklist().search(matches, limit, offset)
    except QueryError as exc:
        raise BadRequest(str(exc)) from None
    results = [ups.without_transaction(model) for model in found]
    if more and "limit" not in request.args:
        warnings.append("the number of results exceeded the maximum supported by the server; "
                        "additional results can be requested with offset")
    if as_xml:
        response = multipart_response([multipart.Part({"Content-Type": DICOM_XML}, [json_to_xml(r)]) for r in results],
                                      DICOM_XML)
    else:
        response = dataset_response(results, False)
    return _answered(response, warnings)


def parse_search(params, max_results: int) -> tuple[list[Match], int, int, list[str]]:  # noqa: ANN001
    """Search parameters → the keys matched, limit, offset and Warning texts (pure)."""
    matches: list[Match] = []
    warnings: list[str] = []
    limit, offset = max_results, 0
    for name, value in params:
        if name == "limit":
            limit = integer("limit", value, 1, 10 ** 9)
        elif name == "offset":
            offset = integer("offset", value, 0, 100_000)
        elif name == "fuzzymatching":
            if value.lower() == "true":
                warnings.append("fuzzymatching is not supported for workitems: names are matched exactly "
                                "(case-insensitive, with wildcards)")
        elif name in CONTROL:
            continue   # includefield: each result is the whole workitem already
        else:
            if "\x00" in value or len(value) > 4096:
                raise QueryError(f"the value of {name[:64]} holds a NUL character or exceeds 4096 characters")
            path = searchable(name)
            if path is None:
                warnings.append(f"{name[:64]} is not supported for matching workitems; the key was ignored")
                continue
            if len(re.split(r"[\\,]", value)) > MAX_LIST_VALUES:
                raise QueryError(f"{name[:64]} lists more than {MAX_LIST_VALUES} values")
            matches.append(Match(path, value))
    if limit > max_results:
        warnings.append(f"limit {limit} exceeds the maximum of {max_results} results per request; "
                        f"at most {max_results} are returned")
        limit = max_results
    return matches, limit, offset, warnings


# -- subscriptions ---------------------------------------------------------------------------

def _deletion_lock() -> bool:
    value = request.args.get("deletionlock", "false").lower()
    if value not in ("true", "false"):
        raise BadRequest(f"deletionlock must be true or false, not {value[:20]!r}")
    return value == "true"


def _titled(action: Callable[[], object], title: str) -> object:
    try:
        return action()
    except TitleTaken:
        raise Forbidden(f"the AE title {title} belongs to another peer's subscriptions") from None


def subscribe(workitem: str, subscriber: str) -> Response:
    """POST /workitems/{workitem}/subscribers/{aetitle}{?deletionlock,filter} (§11.10): a
    workitem, the Worklist (every workitem) or the filtered Worklist."""
    require_uids(**{"Workitem UID": workitem})
    title, lock = ae_title(subscriber), _deletion_lock()
    if workitem in ups.WELL_KNOWN:
        matches = _subscription_filter() if workitem == ups.FILTERED_SUBSCRIPTION else None
        if matches is None and "filter" in request.args:
            raise BadRequest(f"a filter is for the filtered Worklist ({ups.FILTERED_SUBSCRIPTION}), not this one")
        _titled(lambda: worklist().subscribe_all(title, _peer(), lock, matches, _initial_of_row), title)
    else:
        try:
            _titled(lambda: worklist().subscribe(workitem, title, _peer(), lock, _initial), title)
        except WorkitemMissing:
            raise NotFound(f"no workitem {workitem}") from None
    channel.rung()
    response = Response(status=201)
    response.headers["Content-Location"] = channel.channel_url(base_url(), title)
    return response


def _subscription_filter() -> list[Match]:
    """``filter=key=value,key=value`` (§11.10.1.2): one or more keys the workitems must match."""
    text = request.args.get("filter")
    if not text:
        raise BadRequest("a filtered Worklist subscription needs a filter (filter=ProcedureStepState=SCHEDULED,…)")
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise BadRequest(f"the filter's {part[:64]!r} is not key=value")
        pairs.append((key.strip(), value))
    try:
        matches, _, _, warnings = parse_search(pairs, 1)
    except QueryError as exc:
        raise BadRequest(f"the filter: {exc}") from None
    if warnings:
        raise BadRequest(f"the filter: {warnings[0]}")
    return matches


def _initial(item: Workitem) -> ups.Event:
    return ups.Event(ups.STATE_REPORT, ups.state_report(item.model))


def _initial_of_row(uid: str, state: str, readiness: str | None) -> ups.Event:
    model = {ups.T["ProcedureStepState"]: ups.element("ProcedureStepState", state)}
    if readiness:
        model[ups.T["InputReadinessState"]] = ups.element("InputReadinessState", readiness)
    return ups.Event(ups.STATE_REPORT, model)


def unsubscribe(workitem: str, subscriber: str) -> Response:
    """DELETE /workitems/{workitem}/subscribers/{aetitle} (§11.11): a workitem's subscription
    (and its deletion lock), or of the Worklist: the global one and every workitem's."""
    require_uids(**{"Workitem UID": workitem})
    title = ae_title(subscriber)
    if workitem in ups.WELL_KNOWN:
        ended = _titled(lambda: worklist().unsubscribe_all(title, _peer()), title)
    else:
        ended = _titled(lambda: worklist().unsubscribe(workitem, title, _peer()), title)
    if not ended:
        raise NotFound(f"{title} has no such subscription", {"Warning": warning("The target Subscription was not found.")})
    return Response(status=200)


def suspend(workitem: str, subscriber: str) -> Response:
    """POST /workitems/1.2.840.10008.5.1.4.34.5/subscribers/{aetitle}/suspend (§11.12): no
    workitem made from now on is subscribed; those subscribed stay."""
    require_uids(**{"Workitem UID": workitem})
    title = ae_title(subscriber)
    if workitem not in ups.WELL_KNOWN:
        raise BadRequest(f"only a Worklist subscription ({ups.GLOBAL_SUBSCRIPTION}) is suspended")
    if not _titled(lambda: worklist().suspend(title, _peer()), title):
        raise NotFound(f"{title} has no Worklist subscription", {"Warning": warning("The target Subscription was not found.")})
    return Response(status=200)

