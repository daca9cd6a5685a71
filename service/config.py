"""Configuration: one frozen object, filled from defaults, then the environment.

``Config.from_env`` is the only reader of environment variables; the README
lists each of them.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping


LOOPBACK = ("127.0.0.0/8", "::1")

# What a peer may do (checked per transaction, service.auth); worklist comes later.
PERMISSIONS = ("read", "store", "replace", "delete", "worklist")
DEFAULT_PERMISSIONS = frozenset({"read", "store"})


@dataclass(frozen=True)
class Peer:
    """A system allowed to call the service, known by the SHA-256 of its key, and what it may do."""

    name: str
    key_sha256: bytes
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    person: bool = False   # a person's key (``keys add --person``): the only kind that signs in to the viewer


def parse_permissions(text: str) -> frozenset[str]:
    """``read,store`` → the set; ValueError naming an unknown permission."""
    found = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(found - set(PERMISSIONS))
    if unknown or not found:
        raise ValueError(f"unknown permission {unknown[0]!r}" if unknown else "no permission given")
    return found


@dataclass(frozen=True)
class AePeer:
    """A DIMSE peer (service.dimse): its AE title, where it listens (the address C-MOVE sends to),
    and what it may do: ``read`` (find, move, get), ``store``, ``worklist``."""

    ae_title: str
    host: str
    port: int
    permissions: frozenset[str] = DEFAULT_PERMISSIONS


_AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")   # printable ASCII but the backslash (PS3.5 table 6.2-1, AE)
_AE_PEER = re.compile(r"(?P<title>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})"
                      r"(?::(?P<permissions>[a-z+]+))?")


def valid_ae_title(title: str) -> bool:
    return bool(_AE_TITLE.fullmatch(title)) and title == title.strip()


def parse_ae_peers(text: str, name: str = "DICOMWEB_DIMSE_PEERS") -> tuple[AePeer, ...]:
    """``TITLE@HOST:PORT[:read+store+worklist],…`` → the peers (permissions ``read+store`` when
    not given); ValueError naming the entry that does not read."""
    peers: dict[str, AePeer] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        found = _AE_PEER.fullmatch(entry)
        if not found or not valid_ae_title(found["title"]) or not 0 < int(found["port"]) < 65536:
            raise ValueError(f"{name}: {entry[:80]!r} is not TITLE@HOST:PORT[:read+store+worklist]")
        permissions = (parse_permissions(found["permissions"].replace("+", ",")) if found["permissions"]
                       else DEFAULT_PERMISSIONS)
        if found["title"] in peers:
            raise ValueError(f"{name}: the AE title {found['title']!r} is named twice")
        peers[found["title"]] = AePeer(found["title"], found["host"].strip("[]"), int(found["port"]), permissions)
    return tuple(peers.values())


def parse_ae_peers_file(text: str, source: str = "AE peers file") -> tuple[tuple[AePeer, ...], tuple[str, ...]]:
    """Lines of ``TITLE@HOST:PORT[:permissions]`` (a line starting with ``#`` is a comment): the
    peers, and the lines skipped, each with why (a skipped line denies that one peer)."""
    peers: dict[str, AePeer] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found = parse_ae_peers(line, f"{source}:{number}")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if len(found) != 1:
            problems.append(f"{source}:{number}: one TITLE@HOST:PORT[:permissions] a line")
            continue
        peer = found[0]
        if peer.ae_title in peers:
            problems.append(f"{source}:{number}: the AE title {peer.ae_title!r} is named twice; the first line stands")
            continue
        peers[peer.ae_title] = peer
    return tuple(peers.values()), tuple(problems)


def ae_peer_line(peer: AePeer) -> str:
    """The peers file's line of ``peer``."""
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    return f"{peer.ae_title}@{host}:{peer.port}:{'+'.join(sorted(peer.permissions))}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    storage: str = ""                     # directory or s3://bucket/prefix; default <data_dir>/blobs
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    catalog_url: str = ""                 # default sqlite:///<data_dir>/catalog.sqlite
    peers: tuple[Peer, ...] = ()          # from DICOMWEB_API_KEY (the peers file is read by auth.PeerSource)
    peers_file: Path | None = None        # lines of "<peer> <sha256 of its key>", re-read when it changes…
    peers_recheck_seconds: float = 1.0    # …looked at no more often than this (the AE peers file too)
    auth_enabled: bool = True
    url_prefix: str = "/dicom-web"
    public_base_url: str | None = None    # e.g. https://pacs.example.org/dicom-web
    trusted_proxies: int = 0              # how many X-Forwarded-* hops to believe…
    proxy_addresses: tuple[str, ...] = LOOPBACK   # …from these socket peers only (addresses or networks)
    metrics_from: tuple[str, ...] = LOOPBACK      # socket peers that may read /metrics (it needs no key)
    max_request_bytes: int = 8 << 30
    stow_max_parts: int = 10_000          # parts one STOW request may hold
    replace_duplicates: bool = False
    fsync: bool = True
    # Memory one request may hold before it spills to the spool directory (set in code, not the environment).
    spool_memory_bytes: int = 1 << 20              # of one received part (STOW, an upstream's instance)
    metadata_parts_in_memory_bytes: int = 16 << 20  # of all the parts of one metadata STOW, held together
    converted_in_memory_bytes: int = 4 << 20       # of one converted instance
    blob_spool_memory_bytes: int = 16 << 20        # of a blob copied to a seekable file (S3 bodies are not)
    thumbnail_cache_bytes: int = 16 << 20          # rendered thumbnails kept by one worker process
    qido_max_results: int = 1000          # a search returns at most this many results per request
    qido_max_offset: int = 100_000        # …and pages no further than this (facades: 10 × max results)
    cors_origins: tuple[str, ...] = ()    # browser origins allowed to call the service, or ("*",)
    transcode_max_bytes: int = 1 << 30    # largest instance (file or decoded pixels) converted for a request
    # Sequence items of one stored instance, counted before it is parsed (storage.structure): ~100 µs
    # and ~10 KiB of memory an item at ingest; a 5,000-item SR has some 14,000.
    max_sequence_items: int = 25_000
    transcode_slots: int = 2              # conversions running at once in one worker process…
    transcode_wait: float = 10.0          # …and how long a request waits for a free one before a 503
    anonymize_secret: str = ""            # seeds de-identification; default: <data_dir>/anonymize-secret
    upstreams_file: Path | None = None    # upstream DICOMweb origins of a facade (service.facade.upstreams)
    prometheus_multiproc_dir: str | None = None   # where gunicorn's workers keep their metrics (PROMETHEUS_MULTIPROC_DIR)
    upstream_threads: int = 16            # per worker: upstreams searched, and instances checked, at once
    upstream_max_json_bytes: int = 16 << 20   # of one upstream answer of search results or metadata
    upstream_max_listed: int = 2000       # instances of a resource listed (and checked) upstream before a retrieve
    viewer: bool = True                   # the OHIF viewer at /viewer (when installed: `dicomweb viewer install`)
    viewer_version: str = "3.13.2"        # of @ohif/app on the npm registry…
    viewer_integrity: str = ""            # …and its tarball's sha512 (default: the one pinned for that version)
    session_secret: str = ""              # signs viewer sessions; default: <data_dir>/session-secret
    session_idle_seconds: float = 1800.0  # a viewer session ends after this long unused…
    session_max_seconds: float = 43200.0  # …and this long after sign-in, whatever its use
    login_failures_per_minute: int = 10   # failed sign-ins from one client address before it waits
    worklist_channels: int = 8            # per worker: open event channels (WebSockets), each holding a thread
    worklist_queued_events: int = 10_000  # per AE title: event reports kept while its channel is closed
    worklist_poll_seconds: float = 0.05   # SQLite: how often a worker with a channel looks for events others queued
    worklist_retention_seconds: float = 86400.0   # a final workitem no deletion lock holds is removed after this
    redis_url: str = ""                   # Redis for waking event channels across processes and nodes (optional)
    # The DIMSE listener (service.dimse): where it listens (none: no listener), as whom, and whom it knows.
    dimse_bind: str = ""                  # host:port
    dimse_ae_title: str = "DICOMWEB"
    dimse_peers: tuple[AePeer, ...] = ()
    dimse_max_associations: int = 16      # connections at once; more are closed at once (service.dimse.bounds)
    dimse_max_pdu: int = 1 << 20          # the largest PDU we receive (a peer declaring more is cut off)
    dimse_timeout: float = 60.0           # ACSE, DIMSE and network: an association that sends nothing ends
    dimse_peers_file: Path | None = None  # more peers, a TITLE@HOST:PORT[:permissions] a line (dicomweb aes)
    # DICOM TLS (PS3.15 B.9, BCP 195): a second port, our certificate and key, and the CA that
    # signs the peers' certificates (mutual authentication: a peer without one is refused).
    dimse_tls_bind: str = ""
    dimse_tls_cert: str = ""
    dimse_tls_key: str = ""
    dimse_tls_ca: str = ""

    def __post_init__(self) -> None:
        data_dir = Path(self.data_dir)
        object.__setattr__(self, "data_dir", data_dir)
        if not self.storage:
            object.__setattr__(self, "storage", str(data_dir / "blobs"))
        if not self.catalog_url:
            object.__setattr__(self, "catalog_url", f"sqlite:///{(data_dir / 'catalog.sqlite').resolve()}")
        if self.url_prefix and not self.url_prefix.startswith("/"):
            object.__setattr__(self, "url_prefix", "/" + self.url_prefix)
        object.__setattr__(self, "url_prefix", self.url_prefix.rstrip("/"))

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def viewer_dir(self) -> Path:
        """Where `dicomweb viewer install` unpacks the viewer's builds."""
        return self.data_dir / "viewer"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Config":
        data_dir = Path(env.get("DICOMWEB_DATA_DIR", "var"))
        peers = []
        key = env.get("DICOMWEB_API_KEY") or _read_key_file(data_dir / "api-key")
        if key:
            permissions = parse_permissions(env.get("DICOMWEB_API_KEY_PERMISSIONS", "read,store"))
            peers.append(Peer(env.get("DICOMWEB_API_KEY_PEER", "default"), hash_key(key), permissions))
        return cls(
            data_dir=data_dir,
            storage=env.get("DICOMWEB_STORAGE", ""),
            s3_endpoint_url=env.get("DICOMWEB_S3_ENDPOINT_URL") or None,
            s3_region=env.get("DICOMWEB_S3_REGION") or None,
            catalog_url=env.get("DICOMWEB_CATALOG_URL", ""),
            peers=tuple(peers),
            peers_file=peers_path(env),
            auth_enabled=_flag(env.get("DICOMWEB_AUTH", "on"), "DICOMWEB_AUTH"),
            url_prefix=env.get("DICOMWEB_PREFIX", "/dicom-web"),
            public_base_url=env.get("DICOMWEB_PUBLIC_URL") or None,
            trusted_proxies=int(env.get("DICOMWEB_TRUSTED_PROXIES", "0")),
            proxy_addresses=_networks(env.get("DICOMWEB_PROXY_ADDRESSES"), "DICOMWEB_PROXY_ADDRESSES"),
            metrics_from=_networks(env.get("DICOMWEB_METRICS_FROM"), "DICOMWEB_METRICS_FROM"),
            max_request_bytes=int(env.get("DICOMWEB_MAX_REQUEST_BYTES", str(8 << 30))),
            stow_max_parts=int(env.get("DICOMWEB_STOW_MAX_PARTS", "10000")),
            replace_duplicates=env.get("DICOMWEB_ON_DUPLICATE", "reject") == "replace",
            fsync=_flag(env.get("DICOMWEB_FSYNC", "on"), "DICOMWEB_FSYNC"),
            qido_max_results=int(env.get("DICOMWEB_QIDO_MAX_RESULTS", "1000")),
            qido_max_offset=int(env.get("DICOMWEB_QIDO_MAX_OFFSET", "100000")),
            cors_origins=tuple(o.strip().rstrip("/") for o in env.get("DICOMWEB_CORS_ORIGINS", "").split(",")
                               if o.strip()),
            transcode_max_bytes=int(env.get("DICOMWEB_TRANSCODE_MAX_BYTES", str(1 << 30))),
            max_sequence_items=int(env.get("DICOMWEB_MAX_SEQUENCE_ITEMS", "25000")),
            transcode_slots=int(env.get("DICOMWEB_TRANSCODE_SLOTS", "2")),
            transcode_wait=float(env.get("DICOMWEB_TRANSCODE_WAIT", "10")),
            anonymize_secret=env.get("DICOMWEB_ANONYMIZE_SECRET", ""),
            upstreams_file=Path(env["DICOMWEB_UPSTREAMS_FILE"]) if env.get("DICOMWEB_UPSTREAMS_FILE") else None,
            upstream_threads=int(env.get("DICOMWEB_UPSTREAM_THREADS", "16")),
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            thumbnail_cache_bytes=int(env.get("DICOMWEB_THUMBNAIL_CACHE_BYTES", str(16 << 20))),
            viewer=_flag(env.get("DICOMWEB_VIEWER", "on"), "DICOMWEB_VIEWER"),
            viewer_version=env.get("DICOMWEB_VIEWER_VERSION", "3.13.2"),
            viewer_integrity=env.get("DICOMWEB_VIEWER_INTEGRITY", ""),
            session_secret=env.get("DICOMWEB_SESSION_SECRET", ""),
            session_idle_seconds=float(env.get("DICOMWEB_SESSION_IDLE_SECONDS", "1800")),
            session_max_seconds=float(env.get("DICOMWEB_SESSION_MAX_SECONDS", "43200")),
            login_failures_per_minute=int(env.get("DICOMWEB_LOGIN_FAILURES_PER_MINUTE", "10")),
            worklist_channels=int(env.get("DICOMWEB_WORKLIST_CHANNELS", "8")),
            worklist_queued_events=int(env.get("DICOMWEB_WORKLIST_QUEUED_EVENTS", "10000")),
            worklist_poll_seconds=float(env.get("DICOMWEB_WORKLIST_POLL_SECONDS", "0.05")),
            worklist_retention_seconds=float(env.get("DICOMWEB_WORKLIST_RETENTION_SECONDS", "86400")),
            redis_url=env.get("DICOMWEB_REDIS_URL", ""),
            dimse_bind=env.get("DICOMWEB_DIMSE_BIND", ""),
            dimse_ae_title=_ae_title(env.get("DICOMWEB_DIMSE_AE_TITLE", "DICOMWEB")),
            dimse_peers=parse_ae_peers(env.get("DICOMWEB_DIMSE_PEERS", "")),
            dimse_max_associations=int(env.get("DICOMWEB_DIMSE_MAX_ASSOCIATIONS", "16")),
            dimse_max_pdu=int(env.get("DICOMWEB_DIMSE_MAX_PDU", str(1 << 20))),
            dimse_timeout=float(env.get("DICOMWEB_DIMSE_TIMEOUT", "60")),
            dimse_peers_file=Path(env.get("DICOMWEB_DIMSE_PEERS_FILE") or Path(env.get("DICOMWEB_DATA_DIR", "var")) / "ae-peers"),
            dimse_tls_bind=env.get("DICOMWEB_DIMSE_TLS_BIND", ""),
            dimse_tls_cert=env.get("DICOMWEB_DIMSE_TLS_CERT", ""),
            dimse_tls_key=env.get("DICOMWEB_DIMSE_TLS_KEY", ""),
            dimse_tls_ca=env.get("DICOMWEB_DIMSE_TLS_CA", ""),
        )


def _ae_title(title: str) -> str:
    if not valid_ae_title(title):
        raise ValueError(f"DICOMWEB_DIMSE_AE_TITLE: {title[:40]!r} is not an AE title (1 to 16 characters, no backslash)")
    return title


def _networks(value: str | None, name: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (CIDR); loopback when unset."""
    if value is None:
        return LOOPBACK
    found = tuple(v.strip() for v in value.split(",") if v.strip())
    for network in found:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{name}: {network!r} is not an address or network") from None
    return found


def in_networks(address: str | None, networks: tuple[str, ...]) -> bool:
    """Whether ``address`` (a socket peer's) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "on", "true", "yes"):
        return True
    if lowered in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


def _read_key_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


class WatchedFile:
    """A file read again when it changes (its modification time and size), looked at no more
    often than every ``recheck_seconds``: the peers files, so that `dicomweb keys` and `dicomweb
    aes` take effect without a restart."""

    def __init__(self, path: Path | None, recheck_seconds: float) -> None:
        self.path, self.recheck_seconds = path, recheck_seconds
        self._lock = threading.Lock()
        self._checked, self._stamp = 0.0, None

    def reload_if_changed(self, reload: Callable[[], None]) -> None:
        """Call ``reload`` (once, whatever the threads asking) when the file changed since the last look."""
        now = time.monotonic()
        if now - self._checked < self.recheck_seconds:
            return
        with self._lock:
            self._checked = now
            try:
                stat = self.path.stat() if self.path is not None else None
                stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                reload()


def peers_path(env: Mapping[str, str]) -> Path:
    """DICOMWEB_PEERS_FILE, or ``peers`` in the data directory (where ``dicomweb keys add`` writes)."""
    return Path(env.get("DICOMWEB_PEERS_FILE") or Path(env.get("DICOMWEB_DATA_DIR", "var")) / "peers")


@dataclass(frozen=True)
class PeersFile:
    """The peers of a peers file, and its lines that were skipped, each with why."""

    peers: tuple[Peer, ...]
    problems: tuple[str, ...] = ()


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def parse_peers(text: str, source: str = "peers file") -> PeersFile:
    """Lines of ``<peer name> <sha256 hex of its key> [permissions] [person]``, ``#`` starting a
    comment; permissions are comma-separated (read, store, replace, delete, worklist; default read,store);
    ``person`` marks a person's key, which may sign in to the viewer. Read leniently
    where the meaning is plain: ``sha256sum`` output pasted whole (its trailing ``-``) is the
    digest. A line that cannot be read is skipped, and named in ``problems``: skipping denies
    that one peer, and every other line (a revocation included) still takes effect."""
    peers: dict[str, Peer] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) >= 3 and fields[2] == "-":   # "name <digest>  -" from sha256sum
            del fields[2]
        person = len(fields) >= 3 and fields[-1] == "person"
        if person:
            del fields[-1]
        try:
            if len(fields) not in (2, 3) or not _NAME.fullmatch(fields[0]) or not _HEX64.fullmatch(fields[1]):
                raise ValueError("expected '<peer name> <64 hex digits> [read,store,replace,delete] [person]'")
            if fields[0] in peers:
                raise ValueError(f"peer {fields[0]!r} is named twice; the first line stands")
            permissions = parse_permissions(fields[2]) if len(fields) == 3 else DEFAULT_PERMISSIONS
        except ValueError as exc:
            problems.append(f"{source}:{number}: {exc}")
            continue
        peers[fields[0]] = Peer(fields[0], bytes.fromhex(fields[1]), permissions, person)
    return PeersFile(tuple(peers.values()), tuple(problems))


def read_peers(path: Path | None) -> PeersFile:
    """The peers of the file at ``path``; none without one. OSError when it cannot be read."""
    if path is None or not path.exists():
        return PeersFile(())
    return parse_peers(Path(path).read_text(errors="replace"), str(path))
