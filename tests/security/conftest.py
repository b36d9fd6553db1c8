"""Fixtures and tamper helpers for the security suite.

``world`` (function, parametrized over both backends through ``db_url``)
    A small registry on a fixed clock (``T0``) holding a row in every table::

        0 key        genesis operator key
        1 subject    alice   (holds a key: her grants and revocations need it)
        2 subject    bob     (holds a key)
        3 grantee    acme
        4 prior      alice's LoRA
        5 grant      grant_r: bob -> acme, generate           (revoked below)
        6 grant      grant_a: alice -> acme, restore+generate, bound to the prior,
                     not_after = T0 + 30 days
        7 revocation of grant_r, co-signed by bob

    and a checkpoint of size 8 (stored, and in the home's witness file). The world
    is built and signed once per backend per session, then every test gets its own
    copy: the SQLite file (or ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, into
    the test's ``db_url`` database) and the home folder, opened as a new Registry.
    ``sqlite_world`` is the same on SQLite only, for checks that do not touch storage.

Tampering goes around the Registry: raw SQL through ``registry.db.writer``
(``raw``, ``raw_insert``), or a forged log leaf appended with a consistent leaf
hash (``append_leaf``), exactly as an attacker with database access would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from consentry.errors import ConsentryError
from consentry.registry import merkle, tiles
from consentry.registry.models import Grant, Grantee, Prior, Revocation, Subject
from consentry.registry.signing import Envelope, SigningKey, canonical_json
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry, leaf_bytes
from consentry.registry.verify import LogReport
from tests.pgserver import PostgresServer

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
PRIOR_SHA = "ab" * 32
OTHER_SHA = "cd" * 32


class FakeClock:
    """A settable clock (aware UTC, whole seconds) for ``Registry(clock=...)``."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    registry: Registry
    clock: FakeClock
    operator: SigningKey
    alice: Subject
    alice_key: SigningKey
    bob: Subject
    bob_key: SigningKey
    acme: Grantee
    prior: Prior
    grant_r: Grant
    grant_a: Grant
    revocation: Revocation

    def index_of(self, record_id: str) -> int:
        with self.registry.db.read() as session:
            row = session.execute(
                text("SELECT idx FROM log_entries WHERE record_id = :r"), {"r": record_id}
            ).one()
        return int(row[0])


def build_world(home: Path, db_url: str) -> World:
    clock = FakeClock()
    registry = Registry.init(home, db_url, clock=clock)
    operator = SigningKey.load(registry.home.operator_key)
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice = registry.add_subject("Alice Example", ["al"], public_key=alice_key.public_key)
    bob = registry.add_subject("Bob Example", [], public_key=bob_key.public_key)
    acme, _ = registry.add_grantee("Acme Studios")
    prior = registry.add_prior(alice.id, "lora", "sdxl-1.0", sha256=PRIOR_SHA, size=1234)
    grant_r = registry.grant(bob.id, acme.id, ["generate"], subject_key=bob_key)
    grant_a = registry.grant(
        alice.id,
        acme.id,
        ["restore", "generate"],
        priors=[PRIOR_SHA],
        not_after=T0 + timedelta(days=30),
        subject_key=alice_key,
    )
    revocation = registry.revoke(grant_r.id, "consent withdrawn", subject_key=bob_key)
    registry.checkpoint()
    return World(
        registry, clock, operator, alice, alice_key, bob, bob_key, acme, prior,
        grant_r, grant_a, revocation,
    )


@dataclass
class _Template:
    world: World  # its registry is closed; the rows are plain data
    home: Path
    db_file: Path | None = None  # SQLite
    db_name: str | None = None  # PostgreSQL


# One world per backend, built on first use and cloned for every test (a fresh copy
# of the database and of the home folder), so tests stay independent and the suite
# does not sign the same world a hundred times.


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> _Template:
    base = tmp_path_factory.mktemp("world-sqlite")
    db_file = base / "registry.db"
    w = build_world(base / "home", f"sqlite:///{db_file}")
    w.registry.close()
    return _Template(w, base / "home", db_file=db_file)


@pytest.fixture(scope="session")
def _postgres_template(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[_Template]:
    base = tmp_path_factory.mktemp("world-postgresql")
    name = f"consentry_world_{uuid.uuid4().hex[:12]}"
    w = build_world(base / "home", postgres_server.create_database(name))
    w.registry.close()
    try:
        yield _Template(w, base / "home", db_name=name)
    finally:
        postgres_server.drop_database(name)


def clone_world(request: pytest.FixtureRequest, home: Path, db_url: str) -> World:
    """A fresh copy of the backend's template world at ``db_url`` (an empty database)."""
    sqlite = db_url.startswith("sqlite")
    template: _Template = request.getfixturevalue(
        "_sqlite_template" if sqlite else "_postgres_template")
    shutil.copytree(template.home, home)
    if template.db_file is not None:
        target = Path(db_url.removeprefix("sqlite:///"))
        shutil.copyfile(template.db_file, target)
        wal = template.db_file.with_name(template.db_file.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, target.with_name(target.name + "-wal"))
    else:
        name = sql.Identifier(urlsplit(db_url).path.lstrip("/"))
        server: PostgresServer = request.getfixturevalue("postgres_server")
        with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                name, sql.Identifier(template.db_name or "")))
    clock = FakeClock()
    registry = Registry.open(home, db_url, clock=clock)
    return replace(template.world, registry=registry, clock=clock)


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[World]:
    w = clone_world(request, tmp_path / "home", db_url)
    try:
        yield w
    finally:
        w.registry.close()


@pytest.fixture
def sqlite_world(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str
) -> Iterator[World]:
    w = clone_world(request, tmp_path / "home", sqlite_url)
    try:
        yield w
    finally:
        w.registry.close()


# -- raw tampering ----------------------------------------------------------------


def raw(registry: Registry, sql: str, **params: Any) -> int:
    """Run one statement on the writer engine, committed; returns the row count.

    A statement that changes ``log_entries`` also rebuilds the stored tree hashes
    from the edited leaves, as an attacker with the database would, so what follows
    tests the defences behind them (stale stored hashes: tests/security/test_tiles.py).
    """
    with registry.db.writer.begin() as conn:
        count = int(conn.execute(text(sql), params).rowcount)
        if "log_entries" in sql and not sql.lstrip().upper().startswith("SELECT"):
            rebuild_tree_hashes(conn)
        return count


def rebuild_tree_hashes(conn: Any) -> None:
    """Replace the stored tree hashes with those of the leaves now in the table."""
    conn.execute(text("DELETE FROM log_tree_hashes"))
    with contextlib.suppress(ConsentryError):  # a log with a gap: left without any,
        tiles.sync(Session(bind=conn))  # refused at the next use


def raw_insert(registry: Registry, table: str, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    marks = ", ".join(f":{c}" for c in values)
    raw(registry, f"INSERT INTO {table} ({columns}) VALUES ({marks})", **values)


def row_values(row: SQLModel) -> dict[str, Any]:
    return row.model_dump()


def append_leaf(
    registry: Registry,
    kind: str,
    record_id: str,
    envelope: Envelope,
    table: str | None = None,
    row: SQLModel | None = None,
) -> int:
    """Append a forged leaf (consistent leaf hash) and its row, in one transaction."""
    index = registry.log_size()
    data = leaf_bytes(kind, record_id, envelope)
    entry = {
        "idx": index,
        "kind": kind,
        "record_id": record_id,
        "leaf_json": data.decode(),
        "leaf_hash": merkle.leaf_hash(data).hex(),
        "created_at": format_time(T0),
    }
    with registry.db.writer.begin() as conn:
        if row is not None:
            assert table is not None
            row.log_index = index  # type: ignore[attr-defined]
            values = row_values(row)
            columns = ", ".join(values)
            marks = ", ".join(f":{c}" for c in values)
            conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), values)
        conn.execute(
            text(
                "INSERT INTO log_entries (idx, kind, record_id, leaf_json, leaf_hash, created_at)"
                " VALUES (:idx, :kind, :record_id, :leaf_json, :leaf_hash, :created_at)"
            ),
            entry,
        )
    return index


def write_leaf_bytes(registry: Registry, index: int, data: bytes) -> None:
    """Replace a leaf with ``data`` and store the leaf hash that matches it."""
    changed = raw(
        registry,
        "UPDATE log_entries SET leaf_json = :j, leaf_hash = :h WHERE idx = :i",
        j=data.decode(),
        h=merkle.leaf_hash(data).hex(),
        i=index,
    )
    assert changed == 1


def rewrite_leaf(registry: Registry, index: int, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Edit a leaf's JSON in place (kept canonical) and recompute its leaf hash."""
    leaf = json.loads(registry.entry(index).leaf_json)
    mutate(leaf)
    write_leaf_bytes(registry, index, canonical_json(leaf))


def flip_b64_byte(value: str, position: int = 0) -> str:
    raw_bytes = bytearray(base64.b64decode(value))
    raw_bytes[position] ^= 0x01
    return base64.b64encode(bytes(raw_bytes)).decode()


def envelope_at(registry: Registry, index: int) -> Envelope:
    return Envelope.from_json(json.loads(registry.entry(index).leaf_json)["envelope"])


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def forged_grant(
    w: World,
    *,
    subject: Subject,
    issuer_key_id: str,
    subject_key_id: str | None,
    purposes: tuple[str, ...] = ("train",),
) -> Grant:
    """A grant row as the registry would build it, not yet signed or logged."""
    return Grant(
        id=new_id("grt"),
        subject_id=subject.id,
        grantee_id=w.acme.id,
        purposes_json=json.dumps(sorted(purposes)),
        priors_json="[]",
        not_before=format_time(w.clock()),
        not_after=None,
        constraints_json="{}",
        evidence_sha256=None,
        issuer_key_id=issuer_key_id,
        subject_key_id=subject_key_id,
        created_at=format_time(w.clock()),
        log_index=-1,
    )


def forged_revocation(
    w: World, grant: Grant, *, issuer_key_id: str, subject_key_id: str | None
) -> Revocation:
    return Revocation(
        id=new_id("rev"),
        grant_id=grant.id,
        reason="forged",
        issuer_key_id=issuer_key_id,
        subject_key_id=subject_key_id,
        created_at=format_time(w.clock()),
        log_index=-1,
    )


def sign_row(row: SQLModel, keys: list[SigningKey]) -> Envelope:
    return Envelope.sign(statement_of(row), keys)  # type: ignore[arg-type]


# -- assertions on reports ----------------------------------------------------------


def assert_ok(report: LogReport) -> None:
    assert report.ok, report.problems


def assert_reported(report: LogReport, record: str, *fragments: str) -> str:
    """``report`` failed with a problem naming ``record`` and holding every fragment."""
    assert not report.ok, "verify_log passed a tampered registry"
    hits = [p for p in report.problems if record in p and all(f in p for f in fragments)]
    assert hits, f"no problem names {record!r} with {fragments!r}; problems: {report.problems}"
    return hits[0]


_LOGGED_TABLES = {
    "subject": "subjects",
    "grantee": "grantees",
    "grant": "grants",
    "revocation": "revocations",
    "prior": "priors",
}


def assert_rows_match_log(registry: Registry) -> int:
    """Indexes run 0..n-1, each record is logged once, every row has its leaf and every
    leaf its row. Returns n."""
    with registry.db.read() as session:
        indexes = [int(r[0]) for r in session.execute(
            text("SELECT idx FROM log_entries ORDER BY idx"))]
        assert indexes == list(range(len(indexes))), "log indexes have gaps or duplicates"
        twice = session.execute(text(
            "SELECT record_id FROM log_entries GROUP BY record_id HAVING COUNT(*) > 1")).all()
        assert not twice, f"records logged more than once: {twice}"
        for kind, table in _LOGGED_TABLES.items():
            unlogged = session.execute(text(
                f"SELECT t.id FROM {table} t LEFT JOIN log_entries e ON e.record_id = t.id"
                " AND e.idx = t.log_index AND e.kind = :k WHERE e.idx IS NULL"), {"k": kind}).all()
            assert not unlogged, f"{table} rows without their log entry: {unlogged}"
            rowless = session.execute(text(
                f"SELECT e.idx FROM log_entries e LEFT JOIN {table} t ON t.id = e.record_id"
                " AND t.log_index = e.idx WHERE e.kind = :k AND t.id IS NULL"), {"k": kind}).all()
            assert not rowless, f"{kind} log entries without their row: {rowless}"
    return len(indexes)
