"""Bounds on the work one request may ask of a worker: transcoding costs CPU and memory
in proportion to the instance, so its size is capped and the conversions running at
once in a process are counted (the issue's "never block the server on one huge instance")."""
from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from .errors import PayloadTooLarge, ServiceUnavailable

if TYPE_CHECKING:
    from .config import Config


class TranscodeLimits:
    def __init__(self, max_bytes: int, slots: int, wait: float, in_memory: int = 4 << 20,
                 spool_dir: str | os.PathLike | None = None) -> None:
        self.max_bytes = max_bytes
        self.slots = max(1, slots)
        self.wait = wait
        self.in_memory, self.spool_dir = in_memory, spool_dir   # of one converted instance, then on disk
        self._free = threading.BoundedSemaphore(self.slots)

    @classmethod
    def of(cls, config: "Config") -> "TranscodeLimits":
        """The limits of one process (a gunicorn worker, the DIMSE listener) as ``config`` sets them."""
        return cls(config.transcode_max_bytes, config.transcode_slots, config.transcode_wait,
                   config.converted_in_memory_bytes, config.spool_dir)

    def spool(self) -> tempfile.SpooledTemporaryFile:
        """A file for a converted instance: in memory up to ``in_memory`` bytes, then in ``spool_dir``."""
        return tempfile.SpooledTemporaryFile(max_size=self.in_memory, dir=self.spool_dir)

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes

    def check(self, size: int, what: str = "conversion") -> None:
        if not self.fits(size):
            advice = ("ask for transfer-syntax=* to receive it as stored" if what == "conversion"
                      else "ask for fewer frames")
            raise PayloadTooLarge(f"this {what} means handling {size} bytes, more than the {self.max_bytes} "
                                  f"this server handles for one request (DICOMWEB_TRANSCODE_MAX_BYTES); {advice}")

    @contextmanager
    def slot(self, before_answer: bool = True) -> Iterator[None]:
        """Hold one of the worker's conversion slots. Before the answer has started, waiting too long
        is a 503 the client can retry; once it streams, the conversion waits its turn."""
        if not self._free.acquire(timeout=self.wait if before_answer else None):
            raise ServiceUnavailable(f"all {self.slots} transcoding slots of this worker are busy; retry shortly",
                                     {"Retry-After": "5"})
        try:
            yield
        finally:
            self._free.release()
