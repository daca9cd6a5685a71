"""The DIMSE peers the listener knows: those of DICOMWEB_DIMSE_PEERS, and those of the AE peers
file (``dicomweb aes add|remove``), re-read when it changes so that a change takes effect at the
next association without a restart. A title in both is the configuration's."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import AePeer, WatchedFile, parse_ae_peers_file

log = logging.getLogger(__name__)


class AePeerSource:
    def __init__(self, static: tuple[AePeer, ...], path: Path | None, recheck_seconds: float = 1.0) -> None:
        self.static, self.path = static, path
        self._file = WatchedFile(path, recheck_seconds)
        self._peers: dict[str, AePeer] = {peer.ae_title: peer for peer in static}
        self.problems: tuple[str, ...] = ()
        self.current()

    def current(self) -> dict[str, AePeer]:
        """AE title → peer."""
        self._file.reload_if_changed(self._reload)
        return self._peers

    def _reload(self) -> None:
        from_file: tuple[AePeer, ...] = ()
        if self.path is not None and self.path.exists():
            try:
                from_file, self.problems = parse_ae_peers_file(self.path.read_text(errors="replace"), str(self.path))
            except OSError as exc:
                self.problems = (f"{self.path}: cannot be read ({exc}); the peers read before stay in force",)
                log.error("AE peers file: %s", self.problems[0])
                return
        else:
            self.problems = ()
        for problem in self.problems:
            log.error("AE peers file: %s", problem)
        peers = {peer.ae_title: peer for peer in from_file}
        peers.update({peer.ae_title: peer for peer in self.static})
        self._peers = peers
