"""The Worklist service (UPS-RS, PS3.18 chapter 11): ``ups`` the rules (pure), ``workitems_rs``
the resources, ``channel`` the event channel (WebSocket) and what wakes it."""
from __future__ import annotations

import logging
import re

from flask import current_app, request

from storage import Catalog
from storage.worklist import Worklist

from ..auth import SUBSCRIBER_ENVIRON_KEY
from ..config import Config
from ..errors import BadRequest
from . import ups

log = logging.getLogger(__name__)
_AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")       # printable ASCII but the backslash (PS3.5 AE)


def worklist() -> Worklist:
    """The app's Worklist (the catalog's tables of it)."""
    return current_app.extensions["worklist"]


def ae_title(text: str) -> str:
    """An AE title of a URL, its insignificant spaces trimmed (400 for one PS3.5 does not allow);
    kept for the request's audit line."""
    title = text.strip(" ")
    if not _AE_TITLE.fullmatch(title):
        raise BadRequest("the AE title must be 1 to 16 printable ASCII characters, no backslash")
    request.environ[SUBSCRIBER_ENVIRON_KEY] = title
    return title


def announce(config: Config, status: str) -> int:
    """An SCP Status Change event (RESTARTED when the server starts, GOING DOWN when it stops;
    subscriptions kept: WARM START) for every subscribed AE title; how many. A catalog that
    cannot be reached is logged, never in the way of starting or stopping."""
    catalog = Catalog(config.catalog_url, durable=config.fsync)
    try:
        return Worklist(catalog).queue_for_all(ups.scp_status_change(status))
    except Exception:   # noqa: BLE001 - the announcement is a courtesy; the server's start is not
        log.warning("could not announce %s to the worklist's subscribers", status, exc_info=True)
        return 0
    finally:
        catalog.dispose()
