"""``dicomweb``: the operator's commands. Settings come from the same DICOMWEB_* variables
as the server (service.config).

    dicomweb serve [--bind HOST:PORT]      gunicorn with deploy/gunicorn.conf.py
    dicomweb import PATH…                   bulk-load files and folders (DICOMDIR trees too)
    dicomweb keys add|list|revoke           API keys of peers (only their hashes are kept)
    dicomweb dimse                          the DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)
    dicomweb aes add|list|remove            DIMSE peers: AE titles, their addresses and permissions
    dicomweb check [--repair]               every catalog row has its blob, every blob its row
    dicomweb sweep                          remove what interrupted writes left
    dicomweb backfill                       make the metadata of instances stored before it was kept
    dicomweb migrate                        bring the catalog to this version's schema
    dicomweb viewer install                 fetch and check the OHIF viewer served at /viewer
    dicomweb purge --rejected-before DATE   remove for good what Rejection Notes hid before DATE
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Iterator

import click

from storage import Archive, Catalog
from storage.migrations import migrate as migrate_catalog
from storage.worklist import Worklist

from .config import Config, ae_peer_line, parse_ae_peers, parse_ae_peers_file, parse_permissions, read_peers
from .store.commitment_rs import RESULT_DAYS
from .wiring import make_archive

EVENT_DAYS = 7   # UPS event reports no event channel took are dropped after this long

ROOT = Path(__file__).resolve().parent.parent
IMPORT_BATCH = 50


def _config() -> Config:
    return Config.from_env(os.environ)


def _archive(config: Config) -> Archive:
    return make_archive(config)


@click.group(help=__doc__.split("\n\n")[0])
def main() -> None:
    pass


@main.command(help="Serve under gunicorn with deploy/gunicorn.conf.py.")
@click.option("--bind", envvar="DICOMWEB_BIND", default="127.0.0.1:8080", show_default=True)
def serve(bind: str) -> None:
    os.chdir(ROOT)
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py",
                               "--bind", bind, "wsgi:app"])


@main.command("import", help="Store every DICOM file under the PATHs (files, folders, DICOMDIR trees).")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--jobs", default=4, show_default=True, help="files stored in parallel")
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="file listing what was imported, to resume an interrupted import [<data dir>/import-state]")
def import_(paths: tuple[Path, ...], jobs: int, state: Path | None) -> None:
    config = _config()
    archive = _archive(config)
    state = state or config.data_dir / "import-state"
    state.parent.mkdir(parents=True, exist_ok=True)
    done = set(state.read_text().splitlines()) if state.exists() else set()
    files = [f for f in _files(paths) if _state_key(f) not in done]
    batches = [files[i:i + IMPORT_BATCH] for i in range(0, len(files), IMPORT_BATCH)]
    stored = 0
    failures: list[tuple[Path, str]] = []
    with state.open("a") as record, ThreadPoolExecutor(max(1, jobs)) as pool, \
            click.progressbar(length=len(files), label=f"importing {len(files)} file(s)") as bar:
        for outcomes in pool.map(lambda batch: _import_batch(archive, batch), batches):
            for path, outcome in outcomes:
                if outcome.stored:   # new, or already there with the same content
                    stored += 1
                    record.write(_state_key(path) + "\n")
                else:
                    failures.append((path, outcome.message))
                bar.update(1)
            record.flush()
    skipped = len(done)
    click.echo(f"stored {stored}, {len(failures)} failed"
               + (f"; {skipped} skipped as imported before" if skipped else ""))
    for path, message in failures:
        click.echo(f"  {path}: {message}", err=True)
    if failures:
        sys.exit(1)


def _files(paths: tuple[Path, ...]) -> Iterator[Path]:
    """Regular files under the paths, sorted; DICOMDIR indexes are not instances (the files
    they list are in the tree)."""
    for path in paths:
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            if candidate.name.upper() != "DICOMDIR":
                yield candidate


def _state_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}\t{stat.st_size}\t{int(stat.st_mtime)}"


def _import_batch(archive: Archive, paths: list[Path]) -> list[tuple[Path, object]]:
    batch = archive.batch()
    for path in paths:
        with path.open("rb") as fh:
            batch.add(fh)
    return list(zip(paths, batch.commit()))


@main.group(help="API keys of peers: the key is shown once, only its SHA-256 is kept.")
def keys() -> None:
    pass


@keys.command("add", help="Make a key for the peer NAME and print it.")
@click.argument("name")
@click.option("--permissions", default="read,store", show_default=True,
              help="what the peer may do: read, store, replace, delete, worklist (comma-separated)")
@click.option("--person", is_flag=True, help="a person's key, for signing in to the viewer at /viewer/login")
def keys_add(name: str, permissions: str, person: bool) -> None:
    path = _config().peers_file
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise click.UsageError("a peer name is 1 to 64 letters, digits, '-', '_' and '.'")
    try:
        granted = parse_permissions(permissions)
    except ValueError as exc:
        raise click.UsageError(f"--permissions: {exc}") from None
    if name in {peer.name for peer in read_peers(path).peers}:
        raise click.UsageError(f"peer {name!r} has a key already; revoke it first")
    key = secrets.token_urlsafe(32)
    kind = " person" if person else ""
    _append_line(path, f"{name} {hashlib.sha256(key.encode()).hexdigest()} {','.join(sorted(granted))}{kind}")
    click.echo(key)
    click.echo(f"(peer {name!r} added to {path}; the key is not stored and will not be shown again)", err=True)


@keys.command("list", help="The peers that have a key, and what each may do.")
def keys_list() -> None:
    found = read_peers(_config().peers_file)
    for peer in found.peers:
        kind = "\tperson" if peer.person else ""
        click.echo(f"{peer.name}\t{peer.key_sha256.hex()[:12]}…\t{','.join(sorted(peer.permissions))}{kind}")
    for problem in found.problems:
        click.echo(f"skipped: {problem}", err=True)
    if found.problems:
        sys.exit(1)


@keys.command("revoke", help="Remove the key of the peer NAME.")
@click.argument("name")
def keys_revoke(name: str) -> None:
    path = _config().peers_file
    if name not in {peer.name for peer in read_peers(path).peers}:
        raise click.UsageError(f"no peer {name!r} in {path}")
    _rewrite_lines(path, [line for line in path.read_text().splitlines() if line.split(None, 1)[:1] != [name]])
    click.echo(f"revoked {name}")


def _append_line(path: Path, line: str) -> None:
    """A line added to a peers file, made readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as fh:
        fh.write(line + "\n")


def _rewrite_lines(path: Path, lines: list[str]) -> None:
    """A peers file replaced whole, at once (a reader sees the old file or the new one)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


@main.command(help="Run the DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) on DICOMWEB_DIMSE_BIND until stopped.")
def dimse() -> None:
    from .dimse.listener import serve

    config = _config()
    if not config.dimse_bind and not config.dimse_tls_bind:
        raise click.UsageError("DICOMWEB_DIMSE_BIND is not set: host:port to listen on (e.g. 127.0.0.1:11112)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(config, _archive(config))


@main.group(help="DIMSE peers (AE titles) in the AE peers file; the listener reads it again when it changes.")
def aes() -> None:
    pass


@aes.command("add", help="Let the AE title TITLE, listening at HOST:PORT, in.")
@click.argument("title")
@click.argument("address", metavar="HOST:PORT")
@click.option("--permissions", default="read+store", show_default=True,
              help="what the peer may do: read (find, move, get), store, worklist ('+'-joined)")
def aes_add(title: str, address: str, permissions: str) -> None:
    path = _config().dimse_peers_file
    try:
        [peer] = parse_ae_peers(f"{title}@{address}:{permissions}", "the peer")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    known, _ = _ae_peers(path)
    if peer.ae_title in known:
        raise click.UsageError(f"the AE title {peer.ae_title!r} is in {path} already; remove it first")
    _append_line(path, ae_peer_line(peer))
    click.echo(f"added {ae_peer_line(peer)} to {path}")


@aes.command("list", help="The DIMSE peers: of DICOMWEB_DIMSE_PEERS and of the AE peers file.")
def aes_list() -> None:
    config = _config()
    known, problems = _ae_peers(config.dimse_peers_file)
    for peer in config.dimse_peers:
        click.echo(f"{ae_peer_line(peer)}\t(DICOMWEB_DIMSE_PEERS)")
    for peer in known.values():
        click.echo(ae_peer_line(peer))
    for problem in problems:
        click.echo(f"skipped: {problem}", err=True)
    if problems:
        sys.exit(1)


@aes.command("remove", help="Let the AE title TITLE in no more.")
@click.argument("title")
def aes_remove(title: str) -> None:
    path = _config().dimse_peers_file
    known, _ = _ae_peers(path)
    if title not in known:
        raise click.UsageError(f"no AE title {title!r} in {path}")
    _rewrite_lines(path, [line for line in path.read_text().splitlines() if line.strip().partition("@")[0] != title])
    click.echo(f"removed {title}")


def _ae_peers(path: Path) -> tuple[dict, tuple[str, ...]]:
    if not path.exists():
        return {}, ()
    peers, problems = parse_ae_peers_file(path.read_text(errors="replace"), str(path))
    return {peer.ae_title: peer for peer in peers}, problems


@main.command(help="Check that every catalog row has its blob and every blob its row.")
@click.option("--repair", is_flag=True, help="remove rows whose blob is lost, and blobs no row names "
                                            "(older than an hour: younger ones may be stores in progress)")
def check(repair: bool) -> None:
    config = _config()
    archive = _archive(config)
    rows, lost, orphans = archive.audit()
    click.echo(f"{rows} catalog rows, {len(lost)} without their blob; {len(orphans)} blob(s) without a row")
    if repair:
        archive.forget(lost)
        removed = archive.sweep()
        click.echo(f"repaired: {len(lost)} row(s) removed, {removed} unreferenced blob(s) removed")
    elif lost or orphans:
        sys.exit(1)


@main.command(help="Remove blobs no catalog row references, older than an hour (left by interrupted writes), "
                   "and what else interrupted writes left.")
def sweep() -> None:
    config = _config()
    archive = _archive(config)
    click.echo(f"removed {archive.sweep()} orphaned blob(s)")
    ended = archive.catalog.forget_sessions(time.time() - max(config.session_idle_seconds, config.session_max_seconds))
    click.echo(f"forgot {ended} expired viewer session(s)")
    kept = archive.catalog.forget_commitments(time.time() - RESULT_DAYS * 86400)
    click.echo(f"forgot {kept} Storage Commitment result(s) older than {RESULT_DAYS} days")
    worklist = Worklist(archive.catalog)
    titles = worklist.forget_unseen(time.time() - EVENT_DAYS * 86400)
    workitems, events = worklist.sweep(time.time() - config.worklist_retention_seconds, time.time() - EVENT_DAYS * 86400)
    click.echo(f"removed {workitems} final workitem(s) no deletion lock holds, and {events} event report(s) "
               f"waiting more than {EVENT_DAYS} days; forgot {len(titles)} AE title(s) no event channel was seen "
               f"for in {EVENT_DAYS} days")


@main.command(help="Make the stored metadata of instances archived before it was kept.")
def backfill() -> None:
    click.echo(f"made the metadata of {_archive(_config()).backfill_all()} instance(s)")


@main.command(help="Bring the catalog to this version's schema (safe to run again).")
def migrate() -> None:
    config = _config()
    done = migrate_catalog(Catalog(config.catalog_url).engine)
    click.echo("\n".join(done) if done else "the catalog is up to date")


@main.command(help="Remove for good the instances rejected (IOCM Rejection Notes) before DATE.")
@click.option("--rejected-before", "before", required=True,
              help="a date (2026-12-01) or date and time (2026-12-01T12:00), local time")
def purge(before: str) -> None:
    try:
        cutoff = datetime.fromisoformat(before).timestamp()
    except ValueError:
        raise click.UsageError(f"--rejected-before: {before!r} is not a date such as 2026-12-01") from None
    click.echo(f"purged {_archive(_config()).purge_rejected(cutoff)} rejected instance(s)")


@main.group(help="The OHIF viewer served at /viewer.")
def viewer() -> None:
    pass


@viewer.command("install", help="Fetch @ohif/app at DICOMWEB_VIEWER_VERSION with npm, check its sha512, "
                                "unpack it under <data dir>/viewer.")
def viewer_install() -> None:
    from .viewer.build import ViewerInstallError, install

    config = _config()
    if not config.viewer:
        click.echo("the viewer is turned off (DICOMWEB_VIEWER=off): nothing to install")
        return
    try:
        build = install(config.viewer_dir, config.viewer_version, config.viewer_integrity)
    except ViewerInstallError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"OHIF {config.viewer_version} installed in {build}")


if __name__ == "__main__":
    main()
