"""``consentry serve``: the HTTP service (see :mod:`consentry.generation.service`)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import DbOpt, DeviceOpt, DtypeOpt, HomeOpt

__all__ = ["ADMIN_KEY_ENV", "ADMIN_KEY_FILE", "admin_key_digest", "register"]

ADMIN_KEY_ENV = "CONSENTRY_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key.sha256"


def admin_key_digest(home: Path) -> tuple[str, str | None]:
    """The admin key's SHA-256, and the key itself when it was just created.

    ``CONSENTRY_ADMIN_KEY`` wins when set; else ``HOME/admin.key.sha256``; else a new
    key is made, its hash stored (mode 0600) and the key returned to be shown once.
    """
    from consentry.errors import ConfigError
    from consentry.fsutil import atomic_write
    from consentry.generation.service import hash_admin_key

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
) -> None:
    """Serve the gateway, admin and public log API over HTTP (docs at /docs)."""
    import uvicorn

    from consentry.faces.engines import get_engine
    from consentry.generation.backends.base import Backend
    from consentry.generation.service import create_app
    from consentry.registry.store import Registry

    backend: Backend | None = None
    if model is not None:  # loaded before the registry opens: a bad folder or device fails first
        from consentry.generation.backends.diffusers_backend import DiffusersBackend
        from consentry.generation.placement import resolve_placement

        backend = DiffusersBackend(model, resolve_placement(device, dtype))
        typer.echo(f"model {backend.model_dir} on {backend.placement.describe()}")
    registry = Registry.open(home, db)
    try:
        digest, new_key = admin_key_digest(registry.home.root)
        if new_key is not None:
            typer.echo(f"admin key (shown once, stored hashed): {new_key}")
        app = create_app(
            registry,
            get_engine(engine),
            digest,
            refuse_unknown_faces=refuse_unknown_faces,
            model_dir=model,
            backend=backend,
        )
        uvicorn.run(app, host=host, port=port)
    finally:
        registry.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
