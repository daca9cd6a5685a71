"""The blob store interface and its local-disk implementation.

A blob store keeps opaque byte strings under keys made by ``storage.uids.blob_key``.
Every implementation offers the same five operations and raises
``FileNotFoundError`` for a missing key, so callers never see a backend's errors.
"""
from __future__ import annotations

import io
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol, Union

log = logging.getLogger(__name__)

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

    def local_path(self, key: str) -> str | None:
        """The file holding ``key`` on this machine, for a program that reads files (ffmpeg);
        None for a store whose blobs are not local files."""

    def ping(self) -> None:
        """Raise unless the store can be read and written now (readiness checks)."""

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def delete_many(self, keys: list[str]) -> list[str]:
        """Remove ``keys`` (missing ones are not errors); return those that could not be removed."""

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """Yield ``(key, modified_unix_time)`` for every blob under ``prefix``."""


class FileRegion:
    """``count`` bytes of an open file from ``offset``: a piece of a response body that the
    server can hand to the client's socket without reading it (os.sendfile, in the kernel;
    service.handover), or read in chunks where it cannot."""

    def __init__(self, file: BinaryIO, offset: int, count: int) -> None:
        self.file, self.offset, self.count = file, offset, count

    def __len__(self) -> int:
        return self.count

    def send(self, sock) -> None:  # noqa: ANN001
        """Write the region to ``sock``, a blocking socket (os.sendfile straight: socket.sendfile
        sets up a selector each call, a tenth of a small part's cost); OSError if the file ends
        before the region does."""
        out, source, offset, left = sock.fileno(), self.file.fileno(), self.offset, self.count
        while left > 0:
            sent = os.sendfile(out, source, offset, left)
            if sent == 0:
                raise OSError(f"a blob ended after {self.count - left} of the {self.count} bytes its answer declared")
            offset += sent
            left -= sent

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        self.file.seek(self.offset)
        left = self.count
        while left > 0:
            chunk = self.file.read(min(chunk_size, left))
            if not chunk:
                raise OSError(f"a blob ended {left} bytes before its answer did")
            left -= len(chunk)
            yield chunk


BodyPiece = Union[bytes, FileRegion]


def body_pieces(reader: BlobReader) -> Iterator[BodyPiece]:
    """An open blob as pieces of a response body: one FileRegion where the store has the file
    on disk, else chunks of bytes; a region is valid until the next piece is asked for. The
    blob is closed when done or abandoned."""
    try:
        region = getattr(reader, "region", None)
        if region is not None:
            yield region()
        else:
            yield from iter_chunks(reader)
    finally:
        reader.close()


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

    def region(self) -> FileRegion:
        """The rest of the slice, to be sent without reading it (storage.blobs.body_pieces)."""
        return FileRegion(self._fh, self._fh.tell(), self._left)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._fh.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()


STAGING = TEMP_PREFIX + "staging"   # under the root: no key can name it (its parts may not start so)


class Staged(io.BufferedRandom):
    """A file under the store's root that a received instance is written into; ``DiskStore.put``
    moves it into place instead of copying it. Closed without being put, it is deleted."""

    store: "DiskStore"
    path: str
    taken = False

    def close(self) -> None:
        super().close()
        if not self.taken:
            _unlink_quietly(self.path)


class DiskStore:
    """Blobs as files under ``root``: written to a temporary file in the target
    directory, fsync'd, then renamed into place, so a reader sees the whole blob
    or nothing, and a crash leaves at most a ``.tmp-`` file for the sweep.

    ``put`` writes the file and leaves its fsync and rename to a few threads of the process
    (``sync_threads``), so that a store receives its next instance while the disk makes the
    last one durable, and the fsyncs of a batch go to the disk together (ext4 commits them in
    one journal transaction). ``sync`` waits for them; ``open``, ``exists`` and ``delete`` of a
    key being written wait for it too, so the process sees its puts at once."""

    def __init__(self, root: str | os.PathLike, fsync: bool = True, sync_threads: int = 4) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._sync_threads = sync_threads
        self._lock = threading.Lock()
        self._writing: dict[str, set[Future]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def _executor(self) -> ThreadPoolExecutor:
        # Made in the process that uses it: a pool made before gunicorn forks has no threads after.
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._sync_threads, thread_name_prefix="blob-sync")
                self._pool_pid = os.getpid()
            return self._pool

    def _wait_for(self, keys: Iterable[str], reporting: bool = False) -> None:
        """Wait for the writes in progress of ``keys``. A write that failed is kept until a
        ``reporting`` wait (``sync``'s) raises its error and forgets it: however early it failed,
        the batch it belongs to learns of it before recording the blob."""
        keys = list(keys)
        with self._lock:
            futures = [(key, f) for key in keys for f in self._writing.get(key, ())]
        wait([f for _, f in futures])
        failed = [(key, f) for key, f in futures if f.exception() is not None]
        if reporting and failed:
            with self._lock:
                for key, f in failed:
                    self._discard(key, f)
            raise failed[0][1].exception()

    def _discard(self, key: str, future: Future) -> None:
        pending = self._writing.get(key)
        if pending is not None:
            pending.discard(future)
            if not pending:
                del self._writing[key]

    def _finish_later(self, key: str, tmp: str, path: str) -> None:
        future = self._executor().submit(_fsync_and_rename, tmp, path)
        with self._lock:
            self._writing.setdefault(key, set()).add(future)

        def done(f: Future) -> None:
            if f.exception() is None:   # a failure stays for sync to report
                with self._lock:
                    self._discard(key, f)
        future.add_done_callback(done)

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(f"{self.root} is not a writable directory")

    def local_path(self, key: str) -> str | None:
        return self._file(key)

    def _file(self, key: str) -> str:
        """The path of ``key``'s file: no part is empty, ``.``, ``..``, a temporary's name or holds
        a NUL, so it lies under the root (made with strings: it is on every blob read and write)."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) or "\0" in p for p in parts):
            raise ValueError(f"invalid blob key {key!r}")
        return os.path.join(self._root, *parts)

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def staged(self) -> Staged:
        """A new file to receive a blob into (see Staged)."""
        fd, path = _temporary(os.path.join(self._root, STAGING))
        staged = Staged(io.FileIO(fd, "r+"))
        staged.store, staged.path = self, path
        return staged

    def put(self, key: str, stream: BinaryIO) -> int:
        path = self._file(key)
        self._wait_for([key])   # a second put of one key lands after the first
        if isinstance(stream, Staged) and stream.store is self and stream.tell() == 0 and not stream.taken:
            stream.flush()
            size = os.fstat(stream.fileno()).st_size
            stream.taken = True
            if self.fsync:
                self._finish_later(key, stream.path, path)
            else:
                _rename_into(stream.path, path)
            return size
        fd, tmp = _temporary(os.path.dirname(path))
        size = 0
        try:
            try:
                while chunk := stream.read(CHUNK_SIZE):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    size += len(chunk)
            finally:
                os.close(fd)
            if not self.fsync:
                os.replace(tmp, path)
                return size
        except BaseException:
            _unlink_quietly(tmp)
            raise
        self._finish_later(key, tmp, path)
        return size

    def sync(self, keys: Iterable[str]) -> None:
        """fsync the directories holding ``keys`` and their parents up to the root,
        so renames and newly made directories survive a crash."""
        keys = list(keys)
        self._wait_for(keys, reporting=True)
        if not self.fsync:
            return
        directories: set[Path] = set()
        for key in keys:
            directory = self._path(key).parent
            while directory not in directories and (directory == self.root or self.root in directory.parents):
                directories.add(directory)
                directory = directory.parent
        # All at once: the order does not matter, only that all are done before the answer, and
        # ext4 commits concurrent syncs in one journal transaction.
        for done in [self._executor().submit(_fsync_dir, d) for d in directories]:
            done.result()

    def open(self, key: str, start: int = 0, length: int | None = None) -> BlobReader:
        self._wait_for([key])
        fh = open(self._file(key), "rb")
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
        self._wait_for([key])
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._wait_for([key])
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def delete_many(self, keys: list[str]) -> list[str]:
        failed = []
        for key in keys:
            try:
                self.delete(key)
            except OSError:
                log.exception("could not remove the blob %s", key)
                failed.append(key)
        return failed

    def _wait_for_all(self) -> None:
        with self._lock:
            keys = list(self._writing)
        self._wait_for(keys)

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        self._wait_for_all()   # this process's puts in place first
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
        self._wait_for_all()   # not this process's puts in progress, however short the grace
        removed = 0
        cutoff = time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = Path(dirpath, name)
                if name.startswith(TEMP_PREFIX) and full.stat().st_mtime < cutoff:
                    full.unlink(missing_ok=True)
                    removed += 1
        return removed


def _temporary(directory: str) -> tuple[int, str]:
    """A new temporary file in ``directory`` (made, with its parents, if missing): (fd, path)."""
    path = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600), path
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return os.open(path, flags, 0o600), path


def _fsync_and_rename(tmp: str, path: str) -> None:
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename_into(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _rename_into(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path``, making its directory (with parents) where it is missing."""
    try:
        os.replace(tmp, path)
    except FileNotFoundError:
        if not os.path.exists(tmp):
            raise
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(tmp, path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
