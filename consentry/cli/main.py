"""The ``consentry`` command: a thin layer over :class:`consentry.Registry`."""

from __future__ import annotations

import sys

import typer

from consentry.cli import keys_cmds, log_cmds, registry_cmds
from consentry.cli.common import DbOpt, HomeOpt
from consentry.errors import ConsentryError
from consentry.registry.store import Registry

__all__ = ["app", "run"]

app = typer.Typer(
    name="consentry",
    help="Consent-aware likeness registry: subjects, grants, revocations, a signed log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command("init")
def init(home: HomeOpt = None, db: DbOpt = None) -> None:
    """Create a registry: operator key, database and the first signed checkpoint."""
    registry = Registry.init(home, db)
    try:
        typer.echo(f"registry created at {registry.home.root}")
        typer.echo(f"database:         {registry.db.url}")
        typer.echo(f"operator key id:  {registry.key_id}")
        typer.echo(f"public key:       {registry.home.operator_public}")
    finally:
        registry.close()


registry_cmds.register(app)
app.add_typer(log_cmds.app, name="log")
app.add_typer(keys_cmds.app, name="keys")


def run() -> None:
    """Console-script entry point: user errors become one line and an exit code."""
    try:
        app()
    except ConsentryError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run()
