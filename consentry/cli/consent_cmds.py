"""Consent signed on the subject's own device, on the command line.

``consentry grant ... --prepare`` and ``consentry revoke ... --prepare`` write a
prepared statement (an unsigned DSSE envelope, JSON) to stdout; ``consentry sign
FILE --key KEY`` shows it in plain words and signs it, needing only the file and
the key (no registry, no home); ``consentry submit FILE`` checks the signed file
and appends it (see :mod:`consentry.registry.detached`).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.errors import InputError

if TYPE_CHECKING:
    from consentry.registry.signing import Envelope

# consentry.registry.detached, .signing and .subject_view (SQLModel, cryptography) are
# imported inside the commands, so the CLI starts without them.

__all__ = ["register", "write_prepared"]

_MAX_FILE = 1 << 20  # a prepared statement is a few hundred bytes


def write_prepared(envelope: Envelope) -> None:
    """The prepared statement on stdout, its plain words on stderr."""
    from consentry.registry.detached import describe

    for line in describe(envelope):
        typer.echo(line, err=True)
    sys.stdout.write(envelope.dumps() + "\n")


def _read_envelope(path: Path) -> Envelope:
    from consentry.registry.signing import Envelope

    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > _MAX_FILE:
        raise InputError(f"{path}: too large for a prepared statement")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc
    return Envelope.loads(text)


def _signed_path(path: Path) -> Path:
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(f"{stem}.signed.json")


def sign_command(
    statement: Annotated[Path, typer.Argument(help="The prepared statement (JSON).")],
    key: Annotated[Path, typer.Option("--key", help="Your private key file.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write (default: NAME.signed.json).")
    ] = None,
) -> None:
    """Read a prepared grant or revocation in plain words and sign it with your key.

    Needs only the file and the key: run it on your own device."""
    from consentry.registry.detached import describe, sign_prepared
    from consentry.registry.signing import SigningKey

    envelope = _read_envelope(statement)
    for line in describe(envelope):
        typer.echo(line, err=True)
    signed = sign_prepared(envelope, SigningKey.load(key), datetime.now(UTC))
    target = out or _signed_path(statement)
    target.write_text(signed.dumps() + "\n", encoding="utf-8")
    typer.echo(str(target))


def submit_command(
    statement: Annotated[Path, typer.Argument(help="The statement signed by the subject.")],
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a grant or revocation the subject signed on their own device; prints its id."""
    from consentry.registry.detached import receipt_of, submit

    envelope = _read_envelope(statement)
    with open_registry(home, db) as registry:
        row = submit(registry, envelope)
        registry.checkpoint()
    if as_json:
        emit_json(receipt_of(row))
    else:
        typer.echo(row.id)


def me_command(
    server: Annotated[str, typer.Option("--server", help="The registry's service URL.")],
    subject: Annotated[str, typer.Option("--subject", help="Your subject id.")],
    key: Annotated[Path, typer.Option("--key", help="Your private key file.")],
    operator_key: Annotated[
        Path,
        typer.Option("--operator-key", help="The operator's public key (PEM) to verify against."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Your grants and every use of your likeness, fetched with a request signed by your
    key and verified offline against the operator's signed checkpoint."""
    import httpx  # only this command talks HTTP: kept off every other command's start-up

    from consentry.registry.signing import SigningKey, key_id_of, load_public_key
    from consentry.registry.subject_view import make_request, verify_view

    public = load_public_key(operator_key)
    request = make_request(SigningKey.load(key), subject, key_id_of(public), datetime.now(UTC))
    try:
        answer = httpx.post(f"{server.rstrip('/')}/v1/me", json=request.to_json(), timeout=60)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot reach {server}: {exc}") from exc
    if answer.status_code != 200:
        raise InputError(f"the server refused: {answer.status_code} {answer.text[:300]}")
    view = answer.json()
    verified = verify_view(view, [public])
    if as_json:
        emit_json(view | {"verified": verified})
        return
    for grant in view["grants"]:
        until = grant["not_after"] or "-"
        typer.echo(f"grant {grant['id']}  {grant['status']}  to {grant['grantee']}  "
                   f"for {','.join(grant['purposes'])}  until {until}")  # fmt: skip
    for item in view["decisions"]:
        typer.echo(f"{item['time']}  {item['outcome']:8}  {item['grantee']}  "
                   f"{item['purpose']}  log index {item['log_index']}")  # fmt: skip
    typer.echo(f"{verified} decisions verified against the operator's checkpoint")


def change_key_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    new_public_key: Annotated[
        Path, typer.Option("--new-public-key", help="The subject's new public key (PEM).")
    ],
    by_operator: Annotated[
        bool,
        typer.Option("--by-operator", help="The old key is lost: the operator makes the change."),
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (needed with --by-operator).")] = "",
    sign_within: Annotated[
        float, typer.Option("--sign-within", help="Days the subject has to sign (max 30).")
    ] = 7.0,
    home: HomeOpt = None,
    db: DbOpt = None,
) -> None:
    """Prepare a change of a subject's key (lost or compromised) for signing: by the new
    key and the old one, or with --by-operator by the new key alone; then 'consentry
    submit'. After it the old key signs nothing."""
    from consentry.registry.detached import prepare_key_change, sign_window
    from consentry.registry.signing import load_public_key

    with open_registry(home, db) as registry:
        envelope = prepare_key_change(
            registry,
            subject,
            load_public_key(new_public_key),
            reason=reason,
            by_operator=by_operator,
            sign_within=sign_window(sign_within),
        )
    write_prepared(envelope)


def register(app: typer.Typer, subject_app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("sign")(sign_command)
    app.command("submit")(submit_command)
    app.command("me")(me_command)
    subject_app.command("change-key")(change_key_command)
