"""Blob stores, the catalog, and the archive that keeps the two consistent."""
from __future__ import annotations

from .archive import Archive, StoreOutcome
from .blobs import BlobStore, DiskStore
from .catalog import Catalog, StoredInstance


def open_blob_store(location: str, s3_endpoint_url: str | None = None, s3_region: str | None = None,
                    fsync: bool = True) -> BlobStore:
    """A blob store from a location: ``s3://bucket/prefix`` or a directory path."""
    if location.startswith("s3://"):
        from .s3 import S3Store

        return S3Store.from_url(location, endpoint_url=s3_endpoint_url, region=s3_region)
    return DiskStore(location.removeprefix("file://"), fsync=fsync)


__all__ = ["Archive", "BlobStore", "Catalog", "DiskStore", "StoreOutcome", "StoredInstance", "open_blob_store"]
