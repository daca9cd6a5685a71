"""Upstream DICOMweb origins: the national infrastructure an NCPeH facade answers from.

``DICOMWEB_UPSTREAMS_FILE`` is a JSON list of upstreams::

    [{"name": "national-pacs", "url": "https://pacs.example/dicom-web",
      "api_key": "…" | "bearer": "…" | "basic": "user:password",
      "client_cert": ["cert.pem", "key.pem"], "ca": "ca.pem",
      "timeout": 5, "serves": ["search", "retrieve"], "keep": false, "cache_bytes": null}]

``Facade`` holds the upstreams and the threads (``DICOMWEB_UPSTREAM_THREADS`` per worker)
that ask them at once. Searches go to the local catalog and to every upstream that serves search at once, each
within its timeout; results are merged by UID (the local one first), ordered by UID, and
paged together; their RetrieveURLs name this server. An upstream that fails or is late adds
a ``Warning: 299`` naming it. Retrieves of studies, series and instances not held here are
streamed from the first upstream that has them, instance by instance, with this server's
own negotiation and transcoding; with ``keep``, each is also stored here, so the next
request is answered locally: a permanent copy, or with ``cache_bytes`` a cache of that
size whose oldest copies are evicted first. Credentials for upstreams stay here: never in
answers or logs.
"""
from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import requests

from ..wire.multipart import MultipartDecoder, spooled_parts
from ..wire.tags import KEY

ANY_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
UPSTREAM_ENVIRON_KEY = "dicomweb.upstream"


class UpstreamError(Exception):
    """An upstream's answer that cannot be used: too large, too slow, malformed."""


@dataclass
class Upstream:
    name: str
    url: str
    timeout: float = 5.0
    serves: frozenset[str] = frozenset({"search", "retrieve"})
    keep: bool = False              # store what is retrieved from it in the local archive
    cache_bytes: int | None = None  # …as a cache of this size, oldest copies evicted first
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    max_json_bytes: int = 16 << 20  # of one answer of search results or metadata

    def get(self, path: str, params=None, accept: str = "application/dicom+json", stream: bool = False,
            timeout: float | None = None) -> requests.Response:
        # Never redirected: a redirect would take the credentials, the client certificate too,
        # to wherever the upstream (or whoever answers in its name) points.
        return self.session.get(self.url.rstrip("/") + path, params=params, headers={"Accept": accept},
                                timeout=timeout or self.timeout, stream=stream, allow_redirects=False)

    def json(self, response: requests.Response):
        """A JSON answer of this upstream, read within ``max_json_bytes`` and four of its timeouts in all
        (``timeout`` bounds each read, not the answer): UpstreamError beyond either, or for what is not JSON."""
        deadline, body = time.monotonic() + 4 * self.timeout, bytearray()
        try:
            # read1: what one read of the socket gives, so that a trickle meets the deadline
            while chunk := response.raw.read1(1 << 16, decode_content=True):
                body += chunk
                if len(body) > self.max_json_bytes:
                    raise UpstreamError(f"upstream {self.name} answered more than {self.max_json_bytes} bytes of JSON")
                if time.monotonic() > deadline:
                    raise UpstreamError(f"upstream {self.name} took more than {4 * self.timeout:g} s to answer")
        finally:
            response.close()
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {self.name} answered JSON that does not parse: {exc}") from None


def load(path: Path | None, max_json_bytes: int = 16 << 20) -> list[Upstream]:
    """The upstreams of the file; none without one. ValueError when it is malformed."""
    if path is None or not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    upstreams = []
    for entry in entries:
        session = requests.Session()
        session.trust_env = False
        if "api_key" in entry:
            session.headers["Authorization"] = f"ApiKey {entry['api_key']}"
        elif "bearer" in entry:
            session.headers["Authorization"] = f"Bearer {entry['bearer']}"
        elif "basic" in entry:
            user, _, password = entry["basic"].partition(":")
            session.auth = (user, password)
        if "client_cert" in entry:
            session.cert = tuple(entry["client_cert"])
        if "ca" in entry:
            session.verify = entry["ca"]
        unknown = set(entry.get("serves", [])) - {"search", "retrieve"}
        if unknown or "name" not in entry or "url" not in entry:
            raise ValueError(f"{path}: each upstream has a name, a url and serves search and/or retrieve")
        upstreams.append(Upstream(entry["name"], entry["url"], float(entry.get("timeout", 5.0)),
                                  frozenset(entry.get("serves", ["search", "retrieve"])), bool(entry.get("keep")),
                                  entry.get("cache_bytes"), session, max_json_bytes))
    return upstreams


class Facade:
    """The upstreams of an NCPeH facade (none: a plain archive), and the threads of this worker
    that ask them at once (made when first used, so after gunicorn forks)."""

    def __init__(self, upstreams: list[Upstream], threads: int = 16, max_listed: int = 2000) -> None:
        self.upstreams = upstreams
        self.max_listed = max_listed   # instances of a resource listed (and checked) before a retrieve
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="upstream")

    def __bool__(self) -> bool:
        return bool(self.upstreams)

    @property
    def searching(self) -> list[Upstream]:
        return [u for u in self.upstreams if "search" in u.serves]

    @property
    def retrieving(self) -> list[Upstream]:
        return [u for u in self.upstreams if "retrieve" in u.serves]

    def search_all(self, path: str, params: list[tuple[str, str]]) -> tuple[list[list[dict]], list[str]]:
        """Every searching upstream's results for ``path`` (in order), and warnings for those that
        failed or did not answer within their timeout. Runs them at once."""
        searching = self.searching
        futures = {self._pool.submit(_search, u, path, params): u for u in searching}
        wait(futures, timeout=max((u.timeout for u in searching), default=0) + 0.5)
        results, warnings = [], []
        for future, upstream in futures.items():
            if not future.done():
                warnings.append(f"upstream {upstream.name} did not answer within {upstream.timeout:g} s")
                continue
            try:
                results.append(future.result())
            except requests.Timeout:
                warnings.append(f"upstream {upstream.name} did not answer within {upstream.timeout:g} s")
            except Exception as exc:   # any failure of one upstream only costs its results
                warnings.append(f"upstream {upstream.name} failed: {type(exc).__name__}")
        return results, warnings


    def find(self, path: str) -> tuple[Upstream, requests.Response] | None:
        """The first retrieving upstream that answers ``path`` with instances, its response streaming."""
        for upstream in self.retrieving:
            try:
                response = upstream.get(path, accept=ANY_DICOM, stream=True)
            except requests.RequestException:
                continue
            if response.status_code in (200, 206):
                return upstream, response
            response.close()
        return None


    def relay(self, path: str, query: bytes, accept: str | None, here: str, transform=None):
        """A resource not held here (metadata, frames, bulk data, rendered) from the first upstream
        that has it: (upstream, status, content type, body chunks). JSON bodies have their
        BulkDataURIs and RetrieveURLs made to name this server (``here``), and each object of them
        passed through ``transform`` when given; others pass as they come. None when no upstream
        has it."""
        for upstream in self.retrieving:
            try:
                response = upstream.session.get(upstream.url.rstrip("/") + path + (f"?{query.decode()}" if query else ""),
                                                headers={"Accept": accept or "*/*"}, timeout=upstream.timeout, stream=True,
                                                allow_redirects=False)
            except requests.RequestException:
                continue
            if response.status_code not in (200, 206):
                response.close()
                continue
            content_type = response.headers.get("Content-Type", "application/octet-stream")
            is_json = content_type.split(";")[0].strip() in ("application/dicom+json", "application/json")
            if transform is not None and not is_json:   # what cannot be transformed is not relayed
                response.close()
                continue
            if is_json:
                try:
                    found = _here(upstream.json(response), here)
                except UpstreamError:   # too large, too slow, or not JSON: as if this upstream had nothing
                    continue
                if transform is not None:
                    found = [transform(model) for model in found] if isinstance(found, list) else transform(found)
                body = [json.dumps(found).encode()]
                return upstream, response.status_code, content_type, body
            return upstream, response.status_code, content_type, _streamed(response)
        return None


    def listed(self, study: str, series: str | None, instance: str | None) -> tuple[Upstream, list[str], int] | None:
        """The first upstream that lists the resource's instances by QIDO-RS: it, the retrieve paths
        of those it answers for (each checked with HEAD), and how many it lists but cannot give.
        Knowing that before the answer starts is what lets a partial study be a 206 (PS3.18 §10.4.3).
        None when no upstream lists them (then the resource is streamed as the upstream sends it)."""
        scope = f"/studies/{study}" + (f"/series/{series}" if series else "") + "/instances"
        params = [("limit", str(self.max_listed))] + ([("SOPInstanceUID", instance)] if instance else [])
        for upstream in (u for u in self.upstreams if {"search", "retrieve"} <= u.serves):
            try:
                results = _search(upstream, scope, params)
            except (requests.RequestException, UpstreamError):
                continue
            paths = []
            for result in results:
                series_uid = series or (result.get(KEY.SeriesInstanceUID, {}).get("Value") or [None])[0]
                sop = (result.get(KEY.SOPInstanceUID, {}).get("Value") or [None])[0]
                if series_uid and sop:
                    paths.append(f"/studies/{study}/series/{series_uid}/instances/{sop}")
            if not paths:
                continue
            # Checked at once, a few at a time, within one timeout of the upstream's in all.
            checks = [self._pool.submit(_answers, upstream, p) for p in paths]
            done, _ = wait(checks, timeout=upstream.timeout + 0.5)
            available = [p for p, check in zip(paths, checks) if check in done and check.result()]
            for check in checks:
                check.cancel()
            return upstream, available, len(paths) - len(available)
        return None


def _search(upstream: Upstream, path: str, params: list[tuple[str, str]]) -> list[dict]:
    response = upstream.get(path, params, stream=True)
    if response.status_code == 204:
        response.close()
        return []
    if response.status_code != 200:
        response.close()
        raise UpstreamError(f"upstream {upstream.name} answered {response.status_code}")
    found = upstream.json(response)
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise UpstreamError(f"upstream {upstream.name} answered no list of results")
    return found


def parts(response: requests.Response, spool_dir: Path, spool_memory: int, max_bytes: int = 1 << 30) -> Iterator:
    """Each instance of a streamed multipart answer, spooled, one at a time; UpstreamError for an
    answer that is not multipart, MultipartError for one malformed or an instance larger than
    ``max_bytes`` (the answer is not read further)."""
    content_type = response.headers.get("Content-Type", "")
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                     if p.strip().lower().startswith("boundary=")), None)
    if not boundary:
        raise UpstreamError("the upstream's answer is not multipart")
    try:
        for part in spooled_parts(response.iter_content(1 << 20), MultipartDecoder(boundary),
                                  lambda _: tempfile.SpooledTemporaryFile(max_size=spool_memory, dir=spool_dir),
                                  max_part_bytes=max_bytes):
            with part.file:
                yield part.file
    finally:
        response.close()


def _streamed(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(1 << 20)
    finally:
        response.close()


def _here(value, here: str):
    """URLs of DICOM JSON (BulkDataURI, RetrieveURL) moved from the upstream to this server."""
    if isinstance(value, list):
        return [_here(v, here) for v in value]
    if not isinstance(value, dict):
        return value
    moved = {}
    for key, item in value.items():
        if key == "BulkDataURI" and isinstance(item, str) and "/studies/" in item:
            item = here.rstrip("/") + item[item.index("/studies/"):]
        elif key == KEY.RetrieveURL and isinstance(item, dict):
            item = {**item, "Value": [here.rstrip("/") + v[v.index("/studies/"):] if "/studies/" in v else v
                                      for v in item.get("Value", [])]}
        moved[key] = _here(item, here)
    return moved


def _answers(upstream: Upstream, path: str) -> bool:
    try:
        response = upstream.session.head(upstream.url.rstrip("/") + path, headers={"Accept": ANY_DICOM},
                                         timeout=upstream.timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return response.status_code == 200


Merged = TypeVar("Merged")


def merge_by_uid(local: Iterable[Merged], answers: Iterable[Iterable[dict]], uid: Callable[[Merged], Any],
                 convert: Callable[[dict], Merged]) -> tuple[list[Merged], int]:
    """Local results and the upstreams' (each made one of ours by ``convert``) merged by UID, the
    local one first, then ordered by UID; and how many the upstreams added. Results without a
    UID are dropped, as they cannot be told apart."""
    merged = {uid(item): item for item in local}
    added = 0
    for answer in answers:
        for result in answer:
            item = convert(result)
            key = uid(item)
            if key and key not in merged:
                merged[key] = item
                added += 1
    return [merged[key] for key in sorted(merged)], added
