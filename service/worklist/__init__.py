"""The Worklist service (UPS-RS, PS3.18 chapter 11): ``ups`` the rules (pure), ``workitems_rs``
the resources, ``channel`` the event channel (WebSocket) and what wakes it."""
from __future__ import annotations

import logging

from storage import Catalog
from storage.worklist import Worklist

from ..config import Config
from . import ups

log = logging.getLogger(__name__)


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
