"""The blob store interface and its local-disk implementation.

A blob store keeps opaque byte strings under keys made by ``storage.uids.blob_key``.
Every implementation offers the same five operations and raises
``FileNotFoundError`` for a missing key, so callers never see a backend's errors.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

CHUNK_SIZE = 1 << 20
TEMP_PREFIX = ".tmp-"


class BlobReader(Protocol):
    """An open blob: its total ``size`` and a ``read``/``close`` byte stream."""

    size: int

    def read(self, n: int = -1) -> bytes: ...
    def close(self) -> None: ...


class BlobStore(Protocol):
    def put(self, key: str, stream: BinaryIO) -> int:
        """Store the rest of ``stream`` under ``key`` atomically; return the size.

        Readers see the whole blob or nothing; it is durable once ``sync`` returns.
        """

    def sync(self, keys: Iterable[str]) -> None:
        """Make the puts of ``keys`` durable (one call for many puts is cheaper)."""

    def open(self, key: str, start: int = 0, length: int | None = None) -> BlobReader:
        """Open ``key`` for reading, optionally only ``length`` bytes from ``start``."""

    def exists(self, key: str) -> bool: ...

    def ping(self) -> None:
        """Raise unless the store can be read and written now (readiness checks)."""

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """Yield ``(key, modified_unix_time)`` for every blob under ``prefix``."""


def iter_chunks(reader: BlobReader, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read an open blob in chunks and close it when done or abandoned."""
    try:
        while chunk := reader.read(chunk_size):
            yield chunk
    finally:
        reader.close()


class _FileSlice:
    """A file object limited to ``size`` bytes from its current position."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh = fh
        self.size = size
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._fh.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()


class DiskStore:
    """Blobs as files under ``root``: written to a temporary file in the target
    directory, fsync'd, then renamed into place, so a reader sees the whole blob
    or nothing, and a crash leaves at most a ``.tmp-`` file for the sweep."""

    def __init__(self, root: str | os.PathLike, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"{self.root} is not a writable directory")

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        path = self.root.joinpath(*parts)
        if self.root not in path.parents:
            raise ValueError(f"invalid blob key {key!r}")
        return path

    def put(self, key: str, stream: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_SIZE):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return size

    def sync(self, keys: Iterable[str]) -> None:
        """fsync the directories holding ``keys`` and their parents up to the root,
        so renames and newly made directories survive a crash."""
        if not self.fsync:
            return
        directories: set[Path] = set()
        for key in keys:
            directory = self._path(key).parent
            while directory not in directories and (directory == self.root or self.root in directory.parents):
                directories.add(directory)
                directory = directory.parent
        for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
            _fsync_dir(directory)

    def open(self, key: str, start: int = 0, length: int | None = None) -> BlobReader:
        fh = open(self._path(key), "rb")
        try:
            total = os.fstat(fh.fileno()).st_size
            start = min(max(start, 0), total)
            size = total - start if length is None else max(0, min(length, total - start))
            fh.seek(start)
        except BaseException:
            fh.close()
            raise
        return _FileSlice(fh, size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        yield key, full.stat().st_mtime
                    except FileNotFoundError:
                        continue

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Delete ``.tmp-`` files left by interrupted writes; return how many."""
        removed = 0
        cutoff = time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = Path(dirpath, name)
                if name.startswith(TEMP_PREFIX) and full.stat().st_mtime < cutoff:
                    full.unlink(missing_ok=True)
                    removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
