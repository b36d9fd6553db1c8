"""Database engines for SQLite (WAL) and PostgreSQL, and the writer lock.

Invariant: every write transaction holds the registry's single writer lock
from its first statement to its commit, so log indexes are assigned gap-free
and without duplicates by concurrent processes. On SQLite this is
``BEGIN IMMEDIATE`` on the writer engine; on PostgreSQL a transaction-scoped
advisory lock. Readers never take the lock.

Three engines: the writer, the reader (read transactions of several statements:
SQLite ``BEGIN``; PostgreSQL READ COMMITTED, so there each statement sees its own
snapshot anyway) and ``single`` for reads of exactly ONE statement outside any
transaction (SQLite without ``BEGIN``, PostgreSQL ``AUTOCOMMIT``): the statement
is its own snapshot, and the gate's per-check reads cost one round trip instead of
three (``BEGIN``, the query, ``ROLLBACK``). Nothing is ever written through it. On
PostgreSQL it has its own pool (:data:`SINGLE_POOL_SIZE`): a process opens at most
25 connections.

Within one process, writers first queue on a process-local lock and only then take
a connection: at most one connection per process waits on (or holds) the database's
writer lock. Without it, on PostgreSQL (one engine, one pool for readers and
writers) threads waiting on the advisory lock each held a pooled connection; with
the pool drained, the writer holding the lock waited for a thread that waited for
a connection to read (the consent follower), and every write stalled until the
pool's timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from consentry.errors import ConfigError
from consentry.registry import models  # noqa: F401  (registers the tables)
from consentry.registry.raw_sql import RawStatement

__all__ = ["Database", "core"]

_WRITER_LOCK_ID = 0x436F6E73  # "Cons": the advisory lock every PostgreSQL writer takes
SINGLE_POOL_SIZE = 5
"""PostgreSQL connections of the one-statement engine: this many kept, as many more
on demand. With the reader/writer pool (SQLAlchemy's default 5 + 10), a process opens
at most 25 connections."""
_PG_LOCK = RawStatement("SELECT pg_advisory_xact_lock(:k)")
_SQLITE_BEGIN = RawStatement("SELECT 1")


def _sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str, begin: str | None) -> Engine:
    """A SQLite engine in WAL mode; ``begin`` is the statement that opens each
    transaction (``BEGIN IMMEDIATE`` for the writer, ``BEGIN`` for the reader), None
    for the one-statement reader (each statement in SQLite's own autocommit)."""
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    if begin is not None:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

    return engine


def core(executor: Session | Connection) -> Connection:
    """The Core connection of ``executor`` (a session's, in its transaction).

    A Core statement executed on it skips the ORM's execute layer (about 30 us a
    statement here) and the session's autoflush: a caller with ORM objects pending
    flushes first (``session.flush()``), as autoflush would have."""
    return executor.connection() if isinstance(executor, Session) else executor


@dataclass
class Database:
    """The engines over one registry database (see the module doc): ``reader`` for
    read transactions, ``writer`` for writes under the writer lock, ``single`` for
    one-statement reads outside any transaction."""

    url: str
    reader: Engine
    writer: Engine
    single: Engine
    # writers of this process queue here before taking a connection (see the module
    # docstring); re-entrant, so a nested write fails as the database decides
    _writers: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def connect(cls, url: str) -> Database:
        sa_url = _sqlalchemy_url(url)
        try:
            if sa_url.startswith("sqlite"):
                return cls(
                    url,
                    _sqlite_engine(sa_url, "BEGIN"),
                    _sqlite_engine(sa_url, "BEGIN IMMEDIATE"),
                    _sqlite_engine(sa_url, None),
                )
            if sa_url.startswith("postgresql+psycopg://"):
                engine = create_engine(sa_url, pool_recycle=300)
                # its own small pool: a one-statement read holds a connection for one
                # round trip (an AUTOCOMMIT option engine on the shared pool cost about
                # 25 us more per read, switching the level at every checkout)
                single = create_engine(
                    sa_url, pool_recycle=300, isolation_level="AUTOCOMMIT",
                    pool_size=SINGLE_POOL_SIZE, max_overflow=SINGLE_POOL_SIZE,
                )  # fmt: skip
                return cls(url, engine, engine, single)
        except ArgumentError as exc:
            raise ConfigError(f"bad database URL {url!r}: {exc}") from exc
        raise ConfigError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")

    @property
    def is_postgres(self) -> bool:
        return self.writer.dialect.name == "postgresql"

    def create_schema(self) -> None:
        """Create missing tables, then bring tables made by an earlier release up to
        the current columns (see :func:`_upgrade_tables`); rows are never rewritten."""
        try:
            SQLModel.metadata.create_all(self.writer)
            _upgrade_tables(self.writer)
        except OperationalError as exc:
            raise ConfigError(f"cannot open database {self.url}: {exc.orig}") from exc

    @property
    def engines(self) -> list[Engine]:
        """One engine per connection pool (for listeners and dispose); on PostgreSQL
        the reader is the writer."""
        distinct: dict[int, Engine] = {}
        for engine in (self.reader, self.writer, self.single):
            distinct.setdefault(id(engine.pool), engine)
        return list(distinct.values())

    def read(self) -> Session:
        return Session(self.reader, expire_on_commit=False)

    def read_one(self) -> Connection:
        """A pooled connection for ONE read statement outside any transaction (its
        own snapshot); use as ``with db.read_one() as connection:``."""
        return self.single.connect()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session holding the writer lock; commits on success, rolls back on error.

        Queues on the process's writer lock before it takes a connection."""
        with self._writers, Session(self.writer, expire_on_commit=False) as session:
            if self.is_postgres:
                _PG_LOCK.rows(session.connection(), {"k": _WRITER_LOCK_ID})
            else:
                _SQLITE_BEGIN.rows(session.connection(), {})  # opens BEGIN IMMEDIATE now
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def pipelined(self, session: Session) -> Iterator[None]:
        """Statements of ``session`` (a write transaction) sent without waiting for
        each one's answer, all answered at the block's end (psycopg's pipeline mode
        on PostgreSQL: one round trip for the block); a no-op on SQLite. For
        statements whose results nobody reads (inserts); an error is raised at the
        block's end at the latest, and the caller's transaction then rolls back."""
        if not self.is_postgres:
            yield
            return
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        dbapi_error = self.writer.dialect.loaded_dbapi.Error
        try:
            with raw.pipeline():
                yield
        except dbapi_error as exc:  # raised by the pipeline's sync, not wrapped: wrap it
            raise DBAPIError.instance(None, None, exc, dbapi_error) from exc

    def dispose(self) -> None:
        for engine in self.engines:
            engine.dispose()


# Columns added since release 0.1.0, with the value every older row takes, and
# columns that became nullable. Old rows keep their meaning: an old calibration is
# a measurement that restores nothing, and its signed statement (which has no
# ``action`` or ``restores`` key, see ``statement_of``) is unchanged.
_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "grants": {"sign_by": "VARCHAR(20)", "review_by": "VARCHAR(20)"},
    "revocations": {"sign_by": "VARCHAR(20)"},
    "calibrations": {
        "action": "VARCHAR(16) NOT NULL DEFAULT 'measure'",
        "restores": "VARCHAR(40)",
        "review_threshold": "FLOAT",
        "fpir_target": "FLOAT",
        "gallery_size": "INTEGER",
        "max_gallery": "BIGINT",
    },
    "decisions": {
        "release_id": "VARCHAR(16)",
        "marks_json": "TEXT",
        "held_json": "TEXT",
        "review_id": "VARCHAR(40)",
    },
}
_NOW_NULLABLE: dict[str, tuple[str, ...]] = {
    "calibrations": ("fmr_target", "fmr", "fnmr", "eer"),
}


def _upgrade_tables(engine: Engine) -> None:
    """Add the columns of :data:`_ADDED_COLUMNS` and relax :data:`_NOW_NULLABLE` on
    tables an earlier release created (a no-op on a current schema)."""
    with engine.begin() as conn:  # one connection: the writer lock is held once
        tables = set(inspect(conn).get_table_names())
        for table, added in _ADDED_COLUMNS.items():
            if table not in tables:
                continue
            present = {c["name"] for c in inspect(conn).get_columns(table)}
            for name, ddl in added.items():
                if name not in present:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")
        for table, names in _NOW_NULLABLE.items():
            if table not in tables:
                continue
            inspector = inspect(conn)
            strict = [c["name"] for c in inspector.get_columns(table)
                      if c["name"] in names and not c["nullable"]]  # fmt: skip
            if not strict:
                continue
            if engine.dialect.name == "postgresql":
                for name in strict:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {name} DROP NOT NULL")
            else:  # SQLite cannot alter a column: rebuild the table, rows copied as they are
                _rebuild_sqlite_table(conn, table, inspector)


def _rebuild_sqlite_table(conn: Any, table: str, inspector: Any) -> None:
    model = SQLModel.metadata.tables[table]
    old = f"_old_{table}"
    indexes = [index["name"] for index in inspector.get_indexes(table)]
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
    for name in indexes:  # they moved with the renamed table; the new one recreates them
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
    model.create(conn)
    columns = ", ".join(column.name for column in model.columns)
    conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}")
    conn.exec_driver_sql(f"DROP TABLE {old}")
