"""gunicorn settings for the DICOMweb service (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`)."""
import multiprocessing
import os
import tempfile

def _malloc_settings() -> None:
    """glibc raises its mmap threshold each time a large block is freed (up to 32 MiB); after
    that, multi-megabyte answers (study metadata) are carved from the threads' arenas, whose
    memory is kept: the workers crept from 250 to 313 MB over 2,880 such answers. A fixed
    threshold keeps large blocks mapped and returned when freed: 232 → 267 MB, then flat.
    And each of 32 threads may get an arena of its own (up to 8 a core), each keeping what it
    freed: two arenas a process took the peak of a mixed load from 225 to 214 MB with no change
    in rate (docs/benchmarks.md). Set here, in the master before the workers fork, both hold
    for all."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)   # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)            # M_ARENA_MAX
    except (OSError, AttributeError):
        pass   # not glibc: nothing to tune


_malloc_settings()

# Prometheus metrics of every worker, added up by GET /metrics (service/metrics.py): set
# before the app is loaded, a fresh directory each start.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="dicomweb-metrics-"))

# Threads keep slow clients from holding a whole process; two processes per core keep
# short searches from queueing behind each other on one GIL (see docs/benchmarks.md).
# 32 threads a worker: a thread waiting on a slow client's socket costs no CPU, and nginx
# lets one client address hold at most 64 of them (docs/security.md, "Slow clients").
worker_class = "gthread"
workers = 2 * multiprocessing.cpu_count()
threads = 32
# Large studies stream for minutes; a worker busy sending is not stuck.
timeout = 300
graceful_timeout = 30
keepalive = 75
accesslog = None          # the service writes its own audit line per request
errorlog = "-"
loglevel = "info"
# Preload: the app (pydicom, numpy, SQLAlchemy: ~65 MB) is imported once in the master
# and shared copy-on-write by the workers. Database and S3 connections are still
# made in each worker after fork (the catalog and S3 store create them per process).
preload_app = True


def on_starting(server):  # noqa: ANN001
    import logging
    import sys

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit = logging.getLogger("dicomweb.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def when_ready(server):  # noqa: ANN001
    _announce("RESTARTED")
    # The preloaded app's objects live as long as the workers: moving them out of the
    # garbage collector's reach keeps its full collections short and the pages shared.
    import gc

    gc.collect()
    gc.freeze()


def child_exit(server, worker):  # noqa: ANN001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001
    _announce("GOING DOWN")


def _announce(status: str) -> None:
    """UPS-RS subscribers are told the service restarted or goes down (SCP Status Change)."""
    from service.config import Config
    from service.worklist import announce

    announce(Config.from_env(os.environ), status)
