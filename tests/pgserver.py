"""Throwaway PostgreSQL servers for tests and benchmarks.

No pytest dependency: import it from the test suite (``tests/conftest.py``) or
from a bench script (``from tests.pgserver import ThrowawayPostgres``).

Usage::

    with ThrowawayPostgres() as pg:
        url = pg.create_database("scratch")  # postgresql://postgres@127.0.0.1:PORT/scratch
        ...
        pg.drop_database("scratch")

The server runs from ``initdb``/``pg_ctl``/``postgres`` found on ``PATH`` or
under ``/usr/lib/postgresql/*/bin``.  Its data lives in a temporary folder
(under ``$CONSENTRY_TEST_PG_TMPDIR`` if set, else ``/dev/shm`` when roomy, else
the system temp folder; see ``default_base_dir``) that is removed, with the
server stopped, on ``close()``, on leaving the ``with`` block, or at
interpreter exit.  Durability is switched off (``fsync``,
``synchronous_commit``, ``full_page_writes``) because nothing here is worth
keeping.  When running as root the cluster is created and run as the
``postgres`` system user via ``runuser`` (``initdb`` refuses to run as root).

``PostgresServer`` wraps an already running server given an admin URL (one
allowed to create databases); ``ThrowawayPostgres`` is a ``PostgresServer``
that it starts itself.

Run ``python -m tests.pgserver`` to start a server, print its URL and keep it
up until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

__all__ = ["PostgresServer", "ThrowawayPostgres", "default_base_dir", "find_postgres_bindir"]

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
SEARCH_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"  # OS account used when running as root; also the DB superuser

BASE_DIR_ENV = "CONSENTRY_TEST_PG_TMPDIR"  # where to put the temp folder (default: see below)
SHM_DIR = "/dev/shm"
SHM_MIN_FREE = 2 * 1024**3

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# libpq environment variables that would redirect our own pg_ctl/initdb calls.
_PG_ENV_VARS = ("PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS")


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: newest version first."""
    try:
        return tuple(-int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (0,)


def _has_binaries(directory: Path) -> bool:
    return all(
        (directory / name).is_file() and os.access(directory / name, os.X_OK)
        for name in REQUIRED_BINARIES
    )


def find_postgres_bindir() -> Path:
    """Return a directory holding initdb, pg_ctl and postgres.

    Looks at the directory of ``initdb`` on ``PATH`` (and the directory that
    resolves to, for symlinked installs), then at ``/usr/lib/postgresql/*/bin``
    (newest version first).  Raises ``RuntimeError`` naming what is missing.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates += [Path(on_path).parent, Path(on_path).resolve().parent]
    candidates += sorted((Path(p) for p in glob.glob(SEARCH_GLOB)), key=_version_key)
    for directory in candidates:
        if _has_binaries(directory):
            return directory
    searched = ", ".join(dict.fromkeys(str(c) for c in candidates)) or "nothing found"
    raise RuntimeError(
        "PostgreSQL server binaries not found: need "
        + ", ".join(REQUIRED_BINARIES)
        + f" together on PATH or under {SEARCH_GLOB} (candidates: {searched}). "
        "Install them (Debian: `apt-get install -y postgresql`) or point "
        "CONSENTRY_TEST_PG_URL at an existing server."
    )


def default_base_dir() -> str | None:
    """Parent folder for the server's temp folder.

    ``$CONSENTRY_TEST_PG_TMPDIR`` if set (e.g. ``/tmp`` to keep data off RAM);
    else ``/dev/shm`` when it is writable with at least 2 GiB free (CREATE
    DATABASE creates ~300 files, about ten times faster on tmpfs than on a
    typical VM disk); else ``None``, meaning the system temp folder.
    """
    override = os.environ.get(BASE_DIR_ENV)
    if override:
        return override
    try:
        stats = os.statvfs(SHM_DIR)
    except OSError:
        return None
    if os.access(SHM_DIR, os.W_OK | os.X_OK) and stats.f_bavail * stats.f_frsize >= SHM_MIN_FREE:
        return SHM_DIR
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _libpq_url(url: str) -> str:
    """Normalise ``postgresql+driver://`` (SQLAlchemy style) to ``postgresql://``."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return parts._replace(scheme="postgresql").geturl()


class PostgresServer:
    """A running PostgreSQL server reachable through an admin URL."""

    def __init__(self, url: str | None = None) -> None:
        self._url = _libpq_url(url) if url is not None else None

    @property
    def url(self) -> str:
        """Admin URL (``postgresql://...``) of the server's maintenance database."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._url

    def database_url(self, name: str) -> str:
        """URL of database ``name`` on this server (same credentials and options)."""
        _check_db_name(name)
        return urlsplit(self.url)._replace(path="/" + name).geturl()

    def server_version(self) -> str:
        """Connect once and return the server version (also a reachability check)."""
        with self._admin_connection() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        _check_db_name(name)
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (if it exists), disconnecting any remaining sessions."""
        _check_db_name(name)
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}: use [A-Za-z_][A-Za-z0-9_]*, <= 63")


class ThrowawayPostgres(PostgresServer):
    """A private PostgreSQL server in a temporary folder, deleted when closed.

    ``start()`` (or entering the ``with`` block) runs initdb and starts the
    server on a free 127.0.0.1 port; ``close()`` (or leaving the block, or
    interpreter exit) stops it and removes the folder.  Attributes after start:
    ``url``, ``port``, ``bindir``, ``root`` (the temp folder, created under
    ``base_dir``, default ``default_base_dir()``), ``data_dir``,
    ``log_path`` and ``startup_seconds`` (initdb + start, wall clock).
    """

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        port_attempts: int = 5,
    ) -> None:
        super().__init__()
        self.base_dir = base_dir if base_dir is not None else default_base_dir()
        self.startup_timeout = startup_timeout
        self.port_attempts = port_attempts
        self.bindir: Path | None = None
        self.root: Path | None = None
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._owner_pid: int | None = None
        self._runas: list[str] = []

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> ThrowawayPostgres:
        if self.root is not None:
            raise RuntimeError("ThrowawayPostgres already started")
        began = time.monotonic()
        self.bindir = find_postgres_bindir()
        self._runas = self._runas_prefix()
        self.root = Path(tempfile.mkdtemp(prefix="consentry-pg-", dir=self.base_dir))
        self._owner_pid = os.getpid()
        atexit.register(self.close)
        try:
            if self._runas:
                uid, gid = _user_ids(SERVER_USER)
                os.chown(self.root, uid, gid)
            self._initdb()
            self._start_server()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def close(self) -> None:
        """Stop the server and delete its folder; safe to call more than once."""
        root, self.root = self.root, None
        if root is None or self._owner_pid != os.getpid():
            # Not started, already closed, or a forked child: not ours to stop.
            return
        atexit.unregister(self.close)
        self._url = None
        data_dir = root / "data"
        if (data_dir / "postmaster.pid").exists():
            stop = ["pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "30", "stop"]
            try:
                stopped = self._run(stop, check=False, cwd=root).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                stopped = False
            if not stopped:
                _kill_postmaster(data_dir)
        shutil.rmtree(root, ignore_errors=True)

    @property
    def data_dir(self) -> Path:
        return self._root() / "data"

    @property
    def log_path(self) -> Path:
        return self._root() / "server.log"

    # -- internals ---------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("ThrowawayPostgres is not running")
        return self.root

    @staticmethod
    def _runas_prefix() -> list[str]:
        """Command prefix that runs a binary as the postgres user when we are root."""
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
        )
        if runuser is None:
            raise RuntimeError(
                "running as root, so the PostgreSQL server must run as the "
                f"{SERVER_USER!r} user, but `runuser` (util-linux) was not found"
            )
        _user_ids(SERVER_USER)  # fail early, clearly, if the account is missing
        return [runuser, "-u", SERVER_USER, "--"]

    def _run(
        self, argv: list[str], *, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None
        command = [*self._runas, str(self.bindir / argv[0]), *argv[1:]]
        env = {k: v for k, v in os.environ.items() if k not in _PG_ENV_VARS}
        result = subprocess.run(
            command,
            cwd=cwd or self.root,  # a folder the postgres user can read
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            [
                "initdb",
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", SERVER_USER,
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )  # fmt: skip

    def _start_server(self) -> None:
        root = self._root()
        last_error = ""
        for _ in range(self.port_attempts):
            log_offset = self._log_size()
            port = _free_port()
            options = " ".join(
                [
                    f"-p {port}",
                    f"-k {shlex.quote(str(root))}",
                    "-c listen_addresses=127.0.0.1",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            result = self._run(
                [
                    "pg_ctl",
                    "-D", str(self.data_dir),
                    "-l", str(self.log_path),
                    "-o", options,
                    "-w",
                    "-t", str(int(self.startup_timeout)),
                    "start",
                ],
                check=False,
            )  # fmt: skip
            if result.returncode == 0:
                self.port = port
                self._url = f"postgresql://{SERVER_USER}@127.0.0.1:{port}/postgres"
                return
            last_error = result.stdout + result.stderr + self._read_log(log_offset)
            if "already in use" not in last_error:
                break  # not a port race (another process took the port): retrying won't help
        raise RuntimeError(f"PostgreSQL server failed to start in {root}:\n{last_error}")

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _read_log(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""


def _user_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise RuntimeError(
            f"running as root, so the PostgreSQL server must run as the {user!r} user, "
            "but no such account exists (Debian's `postgresql` package creates it)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _kill_postmaster(data_dir: Path) -> None:
    """Last resort: SIGKILL the postmaster recorded in ``data_dir/postmaster.pid``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


def _main() -> None:
    with ThrowawayPostgres() as pg:
        print(f"{pg.url}  (started in {pg.startup_seconds:.2f}s; Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    _main()
