"""Shared pytest fixtures for the consentry test suite.

Database fixtures
-----------------
Every database test runs against both real SQLite and a real PostgreSQL server.

``postgres_server`` (session)
    The PostgreSQL server for this session (per xdist worker).  If the
    environment variable ``CONSENTRY_TEST_PG_URL`` is set, it is the admin URL of
    an existing server on which tests may create databases; otherwise a private
    ``ThrowawayPostgres`` (``tests/pgserver.py``) is started on first use and
    stopped at the end of the session.  Only started when a test needs it.

``db_url`` (function, parametrized ``[sqlite]`` / ``[postgresql]``)
    A URL to a fresh, empty database: ``sqlite:///<tmp_path>/registry.db`` or
    ``postgresql://...`` to a newly created database.  The ``postgresql``
    variant carries ``pytest.mark.postgres`` (deselect with ``-m "not postgres"``).

``sqlite_url`` / ``postgres_url`` (function)
    The same, for tests that need only one backend.  PostgreSQL databases are
    dropped ``WITH (FORCE)`` after the test, so leftover connections are fine.

URLs use libpq's ``postgresql://`` scheme; SQLAlchemy needs
``postgresql+psycopg://`` to pick psycopg 3.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.pgserver import PostgresServer, ThrowawayPostgres

if TYPE_CHECKING:
    from consentry import Registry

pytest_plugins = ["tests.attack_tally"]  # the attack tally (see tests/attack_tally.py)

# Nothing in the suite may reach a model hub: huggingface_hub reads this on first import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The suite checks logic on the CPU everywhere, so its pixel comparisons hold on a GPU
# machine too; the GPU paths are checked by ``python -m bench.gpu_check``.
os.environ.setdefault("CONSENTRY_DEVICE", "cpu")

# Witness state (what defends against a database rollback) lives outside the registry
# home, by default in the per-user state folder: the suite must never write there.
# Session-scoped fixtures use this folder; every test then gets its own (below), and
# CLI subprocesses inherit it.
WITNESS_DIR_ENV = "CONSENTRY_WITNESS_DIR"
_SESSION_WITNESS = tempfile.mkdtemp(prefix="consentry-witness-")
atexit.register(shutil.rmtree, _SESSION_WITNESS, True)
os.environ[WITNESS_DIR_ENV] = _SESSION_WITNESS

PG_URL_ENV = "CONSENTRY_TEST_PG_URL"


@pytest.fixture(autouse=True)
def _witness_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh witness folder per test (outside ``tmp_path``, whose contents some
    tests list), so one test's witnessed checkpoints never judge another's logs."""
    folder = tmp_path_factory.mktemp("witness")
    monkeypatch.setenv(WITNESS_DIR_ENV, str(folder))
    return folder


# -- databases ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (external via CONSENTRY_TEST_PG_URL, or throwaway)."""
    external = os.environ.get(PG_URL_ENV)
    if external:
        server = PostgresServer(external)
        try:
            server.server_version()
        except Exception as exc:
            raise RuntimeError(f"{PG_URL_ENV}={external!r} is not reachable: {exc}") from exc
        yield server
        return
    with ThrowawayPostgres() as throwaway:
        yield throwaway


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite database file in the test's tmp_path."""
    return f"sqlite:///{tmp_path}/registry.db"


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a freshly created, uniquely named PostgreSQL database, dropped afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"consentry_{worker}_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh database; the test runs once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def studio_registry(tmp_path: Path, db_url: str) -> Iterator[Registry]:
    """A fresh registry on each backend with one grantee, "Studio"."""
    from consentry import Registry

    registry = Registry.init(tmp_path / "home", db_url)
    registry.add_grantee("Studio")
    yield registry
    registry.close()
