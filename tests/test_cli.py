"""The operator's command line: keys, import, check, migrate (click's runner, real archive)."""
import os
import time

import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance
from service import create_app
from service.cli import main
from storage import Catalog, DiskStore
from tests.conftest import TEST_FILES, postgres_schema


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("DICOMWEB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DICOMWEB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DICOMWEB_FSYNC", "off")
    return tmp_path


def run(*args, ok=True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_keys_add_list_revoke_take_effect_without_restart(env):
    run("keys", "add", "first-peer")   # a server needs a key to start
    from service.config import Config

    from dataclasses import replace

    app = create_app(replace(Config.from_env(os.environ), peers_recheck_seconds=0))   # the file looked at each time
    key = run("keys", "add", "hospital-a").stdout.strip()
    assert len(key) > 30 and key not in (env / "var" / "peers").read_text()
    assert "hospital-a" in run("keys", "list").output
    assert run("keys", "add", "hospital-a", ok=False).exit_code != 0   # one key a peer
    client = app.test_client()
    assert client.get(f"/dicom-web/studies/{generate_uid()}", headers={"Authorization": key}).status_code == 404
    run("keys", "revoke", "hospital-a")
    assert client.get(f"/dicom-web/studies/{generate_uid()}", headers={"Authorization": key}).status_code == 401
    assert "hospital-a" not in run("keys", "list").output


def test_import_a_tree_resumes_and_reports_failures(env):
    tree = env / "in"
    (tree / "a" / "b").mkdir(parents=True)
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"]
    for i, name in enumerate(names):
        (tree / ("a" if i % 2 else "a/b") / name).write_bytes((TEST_FILES / name).read_bytes())
    (tree / "DICOMDIR").write_bytes(b"not an instance: skipped")
    (tree / "a" / "notes.txt").write_text("not DICOM")
    first = run("import", str(tree), "--jobs", "2", ok=False)
    assert first.exit_code == 1
    assert "stored 4, 1 failed" in first.output and "notes.txt" in first.stderr
    again = run("import", str(tree), ok=False)
    assert "stored 0, 1 failed; 4 skipped as imported before" in again.output
    from service.config import Config

    archive = create_app(Config.from_env({**os.environ, "DICOMWEB_AUTH": "off"})).extensions["archive"]
    from testbed.messages import read
    ct = read((TEST_FILES / "CT_small.dcm").read_bytes())
    assert archive.instances(ct.StudyInstanceUID)


def test_check_and_repair(env):
    from service.config import Config
    from testbed.messages import multipart_body, stow_headers

    run("keys", "add", "op")
    app = create_app(Config.from_env({**os.environ, "DICOMWEB_AUTH": "off"}))
    client = app.test_client()
    study = generate_uid()
    datas = [ct_instance(study, generate_uid(), number=n, rows=8, columns=8) for n in (1, 2)]
    client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    assert "2 catalog rows, 0 without their blob; 0 blob(s) without a row" in run("check").output
    archive = app.extensions["archive"]
    lost = archive.instances(study)[0]
    blobs = DiskStore(app.config["DICOMWEB"].storage)   # the store the app's archive is made on
    blobs.delete(lost.blob_key)
    orphan = blobs.root / "orphan-blob"
    orphan.write_bytes(b"left by a crash")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    result = run("check", ok=False)
    assert result.exit_code == 1 and "1 without their blob; 1 blob(s) without a row" in result.output
    assert "1 row(s) removed, 1 unreferenced blob(s) removed" in run("check", "--repair").output
    assert "1 catalog rows, 0 without their blob; 0 blob(s) without a row" in run("check").output
    [row] = client.get(f"/dicom-web/studies?StudyInstanceUID={study}").get_json()
    assert row["00201208"]["Value"] == [1] and row["00201206"]["Value"] == [1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrate_is_versioned_and_safe_twice(env, monkeypatch, backend):
    if backend == "postgresql":
        with postgres_schema("mig") as url:
            check_migrate(monkeypatch, url)
    else:
        check_migrate(monkeypatch, f"sqlite:///{env / 'catalog.sqlite'}")


def check_migrate(monkeypatch, url):
    monkeypatch.setenv("DICOMWEB_CATALOG_URL", url)
    assert "1: patients, studies" in run("migrate").output
    assert run("migrate").output.strip() == "the catalog is up to date"
    from storage import migrations

    with Catalog(url).engine.connect() as conn:
        assert migrations.current(conn) == migrations.LATEST
    Catalog(url).create_schema()   # a migrated catalog starts


def test_a_version_1_catalog_is_refused_until_migrated(env, monkeypatch):
    import sqlite3

    from storage.catalog import SchemaOutdated

    path = env / "v1.sqlite"
    url = f"sqlite:///{path}"
    monkeypatch.setenv("DICOMWEB_CATALOG_URL", url)
    run("migrate")
    from storage.migrations import ADDED_LATER, LATEST, MIGRATIONS

    with sqlite3.connect(path) as db:   # as version 1 made it: what later migrations add taken away
        for added in sorted(ADDED_LATER):
            table, _, column = added.partition(".")
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}" if column else f"DROP TABLE {table}")
        db.execute("DELETE FROM schema_version WHERE version > 1")
    with pytest.raises(SchemaOutdated, match=f"version 1, this code needs {LATEST}.*dicomweb migrate"):
        Catalog(url).create_schema()
    done = run("migrate").output
    assert [line.split(":")[0] for line in done.splitlines()] == [str(v) for v, _, _ in MIGRATIONS[1:]]
    Catalog(url).create_schema()


def test_keys_carry_permissions(env):
    key = run("keys", "add", "reader", "--permissions", "read").stdout.strip()
    assert "reader" in run("keys", "list").output and "\tread\n" in run("keys", "list").output
    assert run("keys", "add", "x", "--permissions", "write", ok=False).exit_code != 0
    from service.config import read_peers
    [peer] = read_peers(env / "var" / "peers").peers
    assert peer.permissions == {"read"} and len(key) > 30


def test_a_persons_key_signs_in_to_the_viewer_and_a_systems_does_not(env):
    system = run("keys", "add", "pacs-b").stdout.strip()
    person = run("keys", "add", "dr-house", "--person").stdout.strip()
    assert "dr-house\t" in run("keys", "list").output and "\tperson\n" in run("keys", "list").output
    browser = create_app().test_client()
    login = {"headers": {"Origin": "http://localhost"}}
    assert browser.post("/viewer/login", data={"key": system}, **login).status_code == 401
    assert browser.post("/viewer/login", data={"key": person}, **login).status_code == 303
    assert browser.get("/dicom-web/studies").status_code == 200
    run("keys", "revoke", "dr-house")
    time.sleep(1.1)   # the peers file is looked at once a second
    assert browser.get("/dicom-web/studies").status_code == 401


def test_viewer_install_says_why_it_cannot(env, monkeypatch):
    monkeypatch.setenv("DICOMWEB_VIEWER", "off")
    assert "turned off" in run("viewer", "install").output
    monkeypatch.setenv("DICOMWEB_VIEWER", "on")
    monkeypatch.setenv("DICOMWEB_VIEWER_VERSION", "0.0.1-nowhere")
    failed = run("viewer", "install", ok=False)
    assert failed.exit_code == 1 and "DICOMWEB_VIEWER_INTEGRITY" in failed.output
