"""The ``consentry`` command: a thin layer over :class:`consentry.Registry`."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

import consentry
from consentry.cli import (
    audit_cmds,
    certs_cmds,
    demo_cmds,
    gateway_cmds,
    keys_cmds,
    log_cmds,
    policy_cmds,
    provenance_cmds,
    registry_cmds,
    review_cmds,
    serve_cmds,
    witness_cmds,
)
from consentry.cli.common import DbOpt, HomeOpt, emit_error, error_code, reset_json_errors
from consentry.cli.quiet import quiet_third_party
from consentry.config import WITNESS_DIR_ENV
from consentry.errors import ConsentryError

__all__ = ["app", "run"]

app = typer.Typer(
    name="consentry",
    help="Consent-aware likeness registry: subjects, grants, revocations, a signed log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"consentry {consentry.__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    witness_dir: witness_cmds.WitnessDirOpt = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Let libraries' warnings, log lines and download/model progress bars through.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Consent-aware likeness registry: subjects, grants, revocations, a signed log."""
    quiet_third_party(verbose)
    if witness_dir is not None:  # every command below checks the log against this folder
        os.environ[WITNESS_DIR_ENV] = str(witness_dir)


@app.command("init")
def init(home: HomeOpt = None, db: DbOpt = None) -> None:
    """Create a registry: operator key, database, first signed checkpoint, dev PKI."""
    from consentry.provenance.certs import create_dev_pki
    from consentry.registry.store import Registry

    registry = Registry.init(home, db)
    try:
        pki = create_dev_pki(registry.home.root)
        typer.echo(f"registry created at {registry.home.root}")
        typer.echo(f"database:         {registry.db.url}")
        typer.echo(f"operator key id:  {registry.key_id}")
        typer.echo(f"public key:       {registry.home.operator_public}")
        typer.echo(f"C2PA root cert:   {pki.root_cert} (development PKI; see 'consentry certs')")
    finally:
        registry.close()


registry_cmds.register(app)
app.add_typer(log_cmds.app, name="log")
app.add_typer(policy_cmds.app, name="policy")
app.add_typer(keys_cmds.app, name="keys")
app.add_typer(certs_cmds.app, name="certs")
app.add_typer(review_cmds.app, name="review")
provenance_cmds.register(app)
audit_cmds.register(app)
gateway_cmds.register(app)
serve_cmds.register(app)
demo_cmds.register(app)
witness_cmds.register(app)


def run() -> None:
    """Console-script entry point: user errors become one line and an exit code."""
    reset_json_errors()
    try:
        app()
    except ConsentryError as exc:
        emit_error(str(exc), exc.hint, error_code(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        emit_error("interrupted", code="interrupted")
        sys.exit(130)


if __name__ == "__main__":
    run()
