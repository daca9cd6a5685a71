"""Blobs in any S3-compatible object store, through boto3.

boto3 is imported lazily and the client is made on first use in each process,
so a gunicorn master that forks workers never shares a client with them.
Backend errors for missing keys become ``FileNotFoundError`` here.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from typing import Any, BinaryIO, Iterable, Iterator

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 16 << 20


class _S3Body:
    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    def read(self, n: int = -1) -> bytes:
        return self._body.read(None if n < 0 else n)

    def close(self) -> None:
        self._body.close()


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client_options: dict | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.client_options = client_options or {}
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, region: str | None = None) -> "S3Store":
        """Build from ``s3://bucket/prefix``."""
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"S3 storage URL {url!r} names no bucket")
        return cls(bucket, prefix, endpoint_url=endpoint_url, region=region)

    @property
    def client(self) -> Any:
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    import boto3
                    from botocore.config import Config

                    config = Config(max_pool_connections=32, retries={"max_attempts": 4, "mode": "standard"})
                    self._client = boto3.session.Session().client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        config=config,
                        **self.client_options,
                    )
                    self._client_pid = os.getpid()
        return self._client

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid blob key {key!r}")
        return self.prefix + key

    def put(self, key: str, stream: BinaryIO) -> int:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD,
                                use_threads=False)
        counted = _CountingReader(stream)
        self.client.upload_fileobj(counted, self.bucket, self._key(key), Config=config)
        return counted.count

    def sync(self, keys: Iterable[str]) -> None:
        """Nothing to do: S3 acknowledges a PUT once the object is durable."""

    def local_path(self, key: str) -> str | None:
        return None   # objects, not files: ffmpeg is given a copy

    def open(self, key: str, start: int = 0, length: int | None = None):
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or length is not None:
            if length == 0:
                return _S3Body(_Empty(), 0)
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            answer = self.client.get_object(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(key) from None
            if code == "InvalidRange":
                return _S3Body(_Empty(), 0)
            raise
        return _S3Body(answer["Body"], answer["ContentLength"])

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_many(self, keys: list[str]) -> list[str]:
        """S3's DeleteObjects, a thousand keys a request."""
        failed = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True})
            except Exception:
                log.exception("could not remove %d blobs", len(chunk))
                failed += chunk
                continue
            failed += [error["Key"][len(self.prefix):] for error in answer.get("Errors", [])]
        return failed

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Abort multipart uploads begun more than ``older_than`` seconds ago under this store's
        prefix (a worker killed while writing a large blob leaves its parts billed forever)."""
        cutoff = datetime.now().astimezone().timestamp() - older_than
        aborted = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                   Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                modified: datetime = item["LastModified"]
                yield item["Key"][len(self.prefix):], modified.timestamp()


class _CountingReader:
    """Counts what boto3 reads, and keeps boto3 from closing the caller's stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.count += len(data)
        return data


class _Empty:
    def read(self, n: Any = None) -> bytes:
        return b""

    def close(self) -> None:
        pass
