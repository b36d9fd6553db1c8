"""``consentry check``: the gateway's decision on a job, without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry

__all__ = ["register"]


def check_command(
    images: Annotated[list[Path] | None, typer.Argument(help="Input images.")] = None,
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    purpose: Annotated[str, typer.Option("--purpose", help="restore, generate or train.")] = "",
    prior: Annotated[str | None, typer.Option("--prior", help="Registered prior id.")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="The job's prompt.")] = "",
    refuse_unknown_faces: Annotated[
        bool, typer.Option("--refuse-unknown-faces", help="Refuse faces of unregistered people.")
    ] = False,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide whether a job may run; the decision is logged. Exit 0 allow, 1 refuse."""
    from consentry.errors import InputError
    from consentry.faces.engines import get_engine
    from consentry.generation.gateway import CheckRequest, Gateway

    if not requester or not purpose:
        raise InputError("give --as GRANTEE and --purpose P")
    with open_registry(home, db) as registry:
        gateway = Gateway(registry, get_engine(engine), refuse_unknown_faces=refuse_unknown_faces)
        receipt = gateway.check(CheckRequest(requester, purpose, list(images or []), prompt, prior))
    if as_json:
        emit_json(receipt.to_json())
    else:
        typer.echo(
            ("ALLOW" if receipt.allowed else "REFUSE")
            + (
                f" (decision {receipt.decision_id}, log index {receipt.log_index})"
                if receipt.decision_id
                else " (not logged: unknown requester)"
            )
        )
        for reason in receipt.reasons:
            typer.echo(f"  {reason}")
    if not receipt.allowed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
