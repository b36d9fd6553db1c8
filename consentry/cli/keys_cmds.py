"""``consentry keys``: operator key rotation and subject key generation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.errors import DuplicateError

__all__ = ["app"]

app = typer.Typer(help="Operator and subject signing keys.", no_args_is_help=True)


@app.command("list")
def list_keys(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List operator keys, current and retired."""
    with open_registry(home, db) as registry:
        rows = registry.operator_keys()
    values = [
        {
            "key_id": r.key_id,
            "public_key": r.public_key,
            "created_at": r.created_at,
            "log_index": r.log_index,
            "retired_at_index": r.retired_at_index,
            "successor_key_id": r.successor_key_id,
        }
        for r in rows
    ]
    if as_json:
        emit_json(values)
        return
    for value in values:
        state = (
            "active"
            if value["retired_at_index"] is None
            else (f"retired at log index {value['retired_at_index']}")
        )
        typer.echo(f"{value['key_id']}  {state}")


@app.command("rotate")
def rotate(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Replace the operator key; the rotation is signed by the old and the new key."""
    with open_registry(home, db) as registry:
        old = registry.key_id
        new = registry.rotate_key()
    if as_json:
        emit_json({"old_key_id": old, "new_key_id": new.key_id, "log_index": new.log_index})
    else:
        typer.echo(f"retired {old}")
        typer.echo(f"active  {new.key_id} (log index {new.log_index})")


@app.command("generate")
def generate(
    out: Annotated[Path, typer.Argument(help="Where to write the private key (mode 0600).")],
) -> None:
    """Create an Ed25519 key pair for a subject: OUT (private) and OUT.pub (public)."""
    from consentry.registry.signing import SigningKey

    public = out.with_name(out.name + ".pub")
    if out.exists() or public.exists():
        raise DuplicateError(f"{out} or {public} already exists; not overwriting")
    key = SigningKey.generate()
    key.save(out)
    key.save_public(public)
    typer.echo(f"private key: {out}")
    typer.echo(f"public key:  {public}")
    typer.echo(f"key id:      {key.key_id}")
