"""The parts of the service made from its configuration, the same for the app and the
``dicomweb`` command: the archive, and the secrets kept in the data directory."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from storage import Archive, Catalog, open_blob_store

from .config import Config
from .facade.upstreams import Facade, load


def make_archive(config: Config) -> Archive:
    """The archive the configuration names; its catalog made at the latest schema when empty
    (storage.catalog.SchemaOutdated when it is behind), and its connections closed again, as
    the app may be made in a gunicorn master that forks workers."""
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    blobs = open_blob_store(config.storage, config.s3_endpoint_url, config.s3_region, fsync=config.fsync)
    catalog = Catalog(config.catalog_url, durable=config.fsync)
    catalog.create_schema()
    catalog.dispose()
    return Archive(blobs, catalog, replace_duplicates=config.replace_duplicates,
                   max_inflated_bytes=config.transcode_max_bytes, spool_memory=config.blob_spool_memory_bytes,
                   spool_dir=config.spool_dir, max_sequence_items=config.max_sequence_items)


def make_facade(config: Config) -> Facade:
    """The upstreams of DICOMWEB_UPSTREAMS_FILE (none: a plain archive), within the configured bounds."""
    return Facade(load(config.upstreams_file, config.upstream_max_json_bytes), config.upstream_threads,
                  config.upstream_max_listed)


def anonymize_secret(config: Config) -> bytes:
    """DICOMWEB_ANONYMIZE_SECRET, else a random one kept in ``anonymize-secret`` of the data
    directory, made on first use (one per data directory: set the variable where several
    nodes must agree)."""
    return config.anonymize_secret.encode() if config.anonymize_secret else _kept_secret(config, "anonymize-secret")


def session_secret(config: Config) -> bytes:
    """DICOMWEB_SESSION_SECRET, else one kept in ``session-secret`` of the data directory, as
    for the anonymisation secret (nodes behind one balancer must share it)."""
    return config.session_secret.encode() if config.session_secret else _kept_secret(config, "session-secret")


def _kept_secret(config: Config, name: str) -> bytes:
    path = Path(config.data_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    return path.read_text().strip().encode()
