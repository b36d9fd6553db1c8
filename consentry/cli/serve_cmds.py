"""``consentry serve``: the HTTP service (see :mod:`consentry.server`).

``serve`` runs one process by default (uvicorn, a thread pool for the sync
handlers: checks run concurrently); ``--workers N`` runs N uvicorn worker
processes on the same port, each opening the registry and following the log on
its own. Options reach the workers through ``CONSENTRY_SERVE_OPTIONS`` (JSON) and
:func:`worker_app`, the import-string app factory uvicorn calls in each. uvicorn's
per-request access log is off unless ``--access-log`` (decisions are in the signed
log; a line per request costs CPU on the event loop).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consentry.cli.common import DbOpt, DeviceOpt, DtypeOpt, HomeOpt

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "ADMIN_KEY_ENV",
    "ADMIN_KEY_FILE",
    "OPTIONS_ENV",
    "ServeOptions",
    "admin_key_digest",
    "build_app",
    "register",
    "worker_app",
]

ADMIN_KEY_ENV = "CONSENTRY_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key.sha256"
NEW_KEY_FILE = "admin.key.new"  # a new key, when no terminal shows it (then deleted)
OPTIONS_ENV = "CONSENTRY_SERVE_OPTIONS"


def admin_key_digest(home: Path) -> tuple[str, str | None]:
    """The admin key's SHA-256, and the key itself when it was just created.

    ``CONSENTRY_ADMIN_KEY`` wins when set; else ``HOME/admin.key.sha256``; else a new
    key is made, its hash stored (mode 0600) and the key returned to be shown once.
    """
    from consentry.errors import ConfigError
    from consentry.fsutil import atomic_write
    from consentry.server.auth import hash_admin_key

    given = os.environ.get(ADMIN_KEY_ENV, "").strip()
    if given:
        return hash_admin_key(given), None
    path = home / ADMIN_KEY_FILE
    if path.exists():
        digest = path.read_text().strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{path} does not hold a SHA-256 in hex")
        return digest, None
    key = "csa_" + secrets.token_urlsafe(32)
    digest = hash_admin_key(key)
    atomic_write(path, digest + "\n", 0o600, exclusive=True)
    return digest, key


@dataclass(frozen=True)
class ServeOptions:
    """What one ``serve`` process needs to build its app (JSON for the workers)."""

    home: str | None = None
    db: str | None = None
    engine: str = "sface"
    refuse_unknown_faces: bool = False
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    checkpoint_interval: float = 1.0
    checkpoint_every_decision: bool = False
    check_waits_for_proof: bool = False
    serial: bool = False
    follow_interval: float = 0.2
    log_json: bool = False

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls) -> ServeOptions:
        from consentry.errors import ConfigError

        text = os.environ.get(OPTIONS_ENV)
        if not text:
            raise ConfigError(f"{OPTIONS_ENV} is not set: start workers with 'consentry serve'")
        return cls(**json.loads(text))


def show_new_admin_key(root: Path, key: str) -> None:
    """Show a just-made admin key once: on a terminal, printed; else (a service whose
    output is a log) written to ``HOME/admin.key.new`` (mode 0600) for the operator
    to read and delete, and only that path is printed."""
    if sys.stdout.isatty():
        typer.echo(f"admin key (shown once, stored hashed): {key}")
        return
    path = root / NEW_KEY_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(key + "\n")
    typer.echo(f"admin key made: read it once from {path} (mode 0600), then delete that file")


def build_app(options: ServeOptions, *, announce: bool = False) -> FastAPI:
    """Open the registry and build the app of one serve process (the app owns the
    registry: it is closed, after a last checkpoint, when the app shuts down)."""
    from consentry.faces.engines import get_engine
    from consentry.generation.backends.base import Backend
    from consentry.registry.checkpointer import Checkpointer
    from consentry.registry.store import Registry
    from consentry.server import create_app

    backend: Backend | None = None
    model = Path(options.model) if options.model else None
    if model is not None:  # loaded before the registry opens: a bad folder or device fails first
        from consentry.generation.backends.diffusers_backend import DiffusersBackend
        from consentry.generation.placement import resolve_placement

        backend = DiffusersBackend(model, resolve_placement(options.device, options.dtype))
        if announce:
            typer.echo(f"model {backend.model_dir} on {backend.placement.describe()}")
    registry = Registry.open(options.home, options.db)
    try:
        digest, new_key = admin_key_digest(registry.home.root)
        if new_key is not None:
            show_new_admin_key(registry.home.root, new_key)
        if options.log_json:
            from consentry.server.logs import log_decisions_to

            log_decisions_to()
        checkpointer = (
            None
            if options.checkpoint_every_decision
            else Checkpointer(registry, interval=options.checkpoint_interval)
        )
        return create_app(
            registry,
            get_engine(options.engine),
            digest,
            refuse_unknown_faces=options.refuse_unknown_faces,
            model_dir=model,
            backend=backend,
            checkpointer=checkpointer,
            wait_for_proof=options.check_waits_for_proof,
            serial=options.serial,
            follow_interval=options.follow_interval,
            owns_registry=True,
        )
    except BaseException:
        registry.close()
        raise


def worker_app() -> FastAPI:
    """The app factory uvicorn's worker processes call (``--workers N``)."""
    return build_app(ServeOptions.from_env())


def _positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter("must be a positive number of seconds")
    return value


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    refuse_unknown_faces: Annotated[
        bool, typer.Option("--refuse-unknown-faces", help="Refuse faces of unregistered people.")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Local diffusers model folder for generate and restore."),
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="CONSENTRY_WORKERS",
            min=1,
            help="Worker processes (each opens the registry and follows the log).",
        ),
    ] = 1,
    checkpoint_interval: Annotated[
        float,
        typer.Option(
            "--checkpoint-interval",
            envvar="CONSENTRY_CHECKPOINT_INTERVAL",
            callback=_positive,
            help="Seconds between signed checkpoints while the log grows.",
        ),
    ] = 1.0,
    checkpoint_every_decision: Annotated[
        bool,
        typer.Option(
            "--checkpoint-every-decision",
            help="Sign a checkpoint after every decision (the old mode; slower).",
        ),
    ] = False,
    check_waits_for_proof: Annotated[
        bool,
        typer.Option(
            "--check-waits-for-proof",
            help="A check waits for a checkpoint covering it and returns its proof.",
        ),
    ] = False,
    serial: Annotated[
        bool,
        typer.Option("--serial", help="Decide one check at a time (the old single-lock mode)."),
    ] = False,
    follow_interval: Annotated[
        float,
        typer.Option(
            "--follow-interval",
            envvar="CONSENTRY_FOLLOW_INTERVAL",
            callback=_positive,
            help="Seconds between background follows of the log (other processes' writes).",
        ),
    ] = 0.2,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            envvar="CONSENTRY_ACCESS_LOG",
            help="Log one line per HTTP request (off by default: it costs CPU per request).",
        ),
    ] = False,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json",
            envvar="CONSENTRY_LOG_JSON",
            help="Print one JSON line per decision (ids only) on stdout.",
        ),
    ] = False,
) -> None:
    """Serve the gateway, admin and public log API over HTTP (docs at /docs)."""
    import uvicorn

    options = ServeOptions(
        home=str(home) if home is not None else None,
        db=db,
        engine=engine,
        refuse_unknown_faces=refuse_unknown_faces,
        model=str(model) if model is not None else None,
        device=device,
        dtype=dtype,
        checkpoint_interval=checkpoint_interval,
        checkpoint_every_decision=checkpoint_every_decision,
        check_waits_for_proof=check_waits_for_proof,
        serial=serial,
        follow_interval=follow_interval,
        log_json=log_json,
    )
    if workers == 1:
        uvicorn.run(build_app(options, announce=True), host=host, port=port, access_log=access_log)
        return
    # the admin key is made (and shown) once, here; every worker reads its hash
    from consentry.registry.store import Registry

    with Registry.open(options.home, options.db) as registry:
        _, new_key = admin_key_digest(registry.home.root)
    if new_key is not None:
        show_new_admin_key(registry.home.root, new_key)
    os.environ[OPTIONS_ENV] = options.to_env()
    uvicorn.run(
        "consentry.cli.serve_cmds:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
