"""Shared fixtures: apps over temporary archives, test DICOM files, PostgreSQL and S3 (moto)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from service import create_app
from service.config import Config, hash_key, Peer
from testbed import postgres
from testbed.server import free_port  # noqa: F401 - the tests' own, from the testbed

API_KEY = "test-key-0123456789"
PEER = "test-peer"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def sweep_days_later(monkeypatch, config: Config, days: float) -> str:
    """``dicomweb sweep`` run on ``config``'s archive as if ``days`` had passed; what it printed."""
    import time

    from click.testing import CliRunner

    from service.cli import main

    for name in [n for n in os.environ if n.startswith("DICOMWEB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DICOMWEB_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("DICOMWEB_CATALOG_URL", config.catalog_url)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + days * 86400)
    try:
        return CliRunner().invoke(main, ["sweep"], catch_exceptions=False).output
    finally:
        monkeypatch.setattr(time, "time", real)


def need_redis() -> None:
    """Skip (fail in CI, where it runs) unless Redis answers on 127.0.0.1:6379."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if in_ci():
            pytest.fail("Redis is not reachable on 127.0.0.1:6379 in CI")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")


def pydicom_test_files() -> list[Path]:
    """Every file under pydicom's test_files that looks like DICOM (readable or not)."""
    return sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and p.suffix not in (".txt", ".json", ".dump",
                                                                                         ".gz", ".icc"))


def make_config(tmp_path: Path, **overrides) -> Config:
    values = dict(data_dir=tmp_path / "var", peers=(Peer(PEER, hash_key(API_KEY)),))
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def app(config):
    return create_app(config)


@pytest.fixture
def client(app):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    return client


@contextmanager
def postgres_schema(prefix: str = "t"):
    """A catalog URL on a fresh schema of the local PostgreSQL ``test`` database (testbed.postgres).

    Skips with a visible reason where no server listens; in CI, where one must, fails instead.
    """
    if not postgres.reachable():
        if in_ci():
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 in CI")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres.schema(prefix) as url:
        yield url


def require_command(command: str, package: str) -> None:
    """Skips with a visible reason where ``command`` is not installed; in CI, where make test
    installs its Debian ``package``, fails."""
    if shutil.which(command) is None:
        if in_ci():
            pytest.fail(f"{command} is not installed; make test installs it ({package})")
        pytest.skip(f"{command} is not installed (apt-get install {package}; make test does)")


def require_nginx() -> None:
    """Skips with a visible reason where nginx is not installed; in CI, where make test installs it, fails."""
    from testbed.nginx import available

    if not available():
        if in_ci():
            pytest.fail("nginx is not installed; make test installs it")
        pytest.skip("nginx is not installed (apt-get install nginx; make test does)")


@pytest.fixture
def postgres_url():
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server over real HTTP on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def unexpected_errors() -> float:
    """Requests of this process that reached the error handler's last resort (service.metrics)."""
    from service import metrics

    return sum(sample.value for family in metrics.UNEXPECTED.collect() for sample in family.samples
               if sample.name.endswith("_total"))


@pytest.fixture(autouse=True)
def no_unexpected_errors(request):
    """Every test fails if one of its requests was answered by an unexpected exception: no
    input may make a 500 (or break an answer that has started). Only the test of the
    handler itself is marked ``defect_expected``."""
    before = unexpected_errors()
    yield
    if request.node.get_closest_marker("defect_expected") is None:
        assert unexpected_errors() == before, "a request of this test reached the unexpected-exception handler"
