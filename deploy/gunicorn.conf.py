"""gunicorn settings for the DICOMweb service (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`)."""
import multiprocessing

# Threads keep slow clients from holding a whole process; processes use the cores.
worker_class = "gthread"
workers = max(2, multiprocessing.cpu_count())
threads = 8
# Large studies stream for minutes; a worker busy sending is not stuck.
timeout = 300
graceful_timeout = 30
keepalive = 75
accesslog = None          # the service writes its own audit line per request
errorlog = "-"
loglevel = "info"
# No preload: each worker opens its own database and S3 connections after fork.
preload_app = False


def on_starting(server):  # noqa: ANN001
    import logging
    import sys

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit = logging.getLogger("dicomweb.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False
