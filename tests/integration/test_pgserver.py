"""The database fixtures give real, working, isolated databases on both backends."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.pgserver import PostgresServer


def test_db_url_gives_working_database(db_url: str, request: pytest.FixtureRequest) -> None:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, label VARCHAR(40))"))
            conn.execute(
                text("INSERT INTO probe (id, label) VALUES (:id, :label)"),
                [{"id": 1, "label": "alpha"}, {"id": 2, "label": "beta"}],
            )
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, label FROM probe ORDER BY id")).all()
        assert [tuple(row) for row in rows] == [(1, "alpha"), (2, "beta")]

        backend = request.node.callspec.params["db_url"]
        assert engine.dialect.name == backend
        assert (request.node.get_closest_marker("postgres") is not None) == (
            backend == "postgresql"
        )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_server_creates_and_drops_databases(postgres_server: PostgresServer) -> None:
    name = f"probe_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    assert url.startswith("postgresql://") and url.endswith(f"/{name}")

    held_open = psycopg.connect(url)  # DROP ... WITH (FORCE) must not wait for it
    try:
        assert held_open.execute("SELECT current_database()").fetchone() == (name,)
        postgres_server.drop_database(name)
    finally:
        held_open.close()

    with psycopg.connect(postgres_server.url) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None
