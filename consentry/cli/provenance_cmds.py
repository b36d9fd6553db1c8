"""``consentry verify FILE``: check a released image's C2PA manifest and its consent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, fail, open_registry
from consentry.cli.vocabulary import verify_view
from consentry.cli.witness_cmds import WitnessKeyOpt, parse_witness_keys

__all__ = ["register", "verify"]


def verify(
    file: Annotated[Path, typer.Argument(help="The image to verify (JPEG, PNG or WebP).")],
    home: HomeOpt = None,
    db: DbOpt = None,
    witness_key: WitnessKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify an output: trusted C2PA manifest and consent at the time of its decision.

    With --witness-key the decision must also be in a checkpoint that witness cosigned.

    A file whose manifest was stripped is traced by its watermark and fingerprint
    ("provenance recovered, manifest stripped", exit 0) when both lead to a consented
    release. Exit 0 only if both hold (or the release is recovered); 1 with the C2PA
    status codes and the consent reason otherwise; 2 if the file is not a readable image.
    """
    # imported here: c2pa, numpy and Pillow would slow every other command's start
    from consentry.provenance.verify import read_media, verify_media

    witnesses = parse_witness_keys(witness_key)
    data, mime = read_media(file)
    with open_registry(home, db) as registry:
        result = verify_media(registry, data, mime)
        log = registry.log
        unwitnessed = [
            name
            for name, public in witnesses
            if result.log_index is None or log.cosigned_size(name, public) <= result.log_index
        ]
    if result.ok and unwitnessed:
        fail(f"{file}: its decision is in no checkpoint cosigned by {', '.join(unwitnessed)}")
    if as_json:
        emit_json(verify_view(result.to_json()))
        if not (result.ok or result.recovered):
            raise typer.Exit(1)
        return
    codes = ", ".join(result.codes) if result.codes else "no failure codes"
    typer.echo(f"c2pa:     {result.c2pa_state} ({codes})")
    typer.echo(f"consent:  {'ok' if result.consent_ok else 'FAILED'}: {result.consent_reason}")
    if result.decision_id is not None:
        typer.echo(f"decision: {result.decision_id} (log index {result.log_index})")
    if result.grant_ids:
        typer.echo(f"grants:   {', '.join(result.grant_ids)}")
    if result.subject_ids:
        typer.echo(f"subjects: {', '.join(result.subject_ids)}")
    for binding in result.soft_bindings:
        typer.echo(f"binding:  {binding['alg']} {binding['value']}")
    if not (result.ok or result.recovered):
        fail(f"{file} does not verify: {result.consent_reason}")


def register(app: typer.Typer) -> None:
    """Attach ``verify`` to the root app."""
    app.command("verify")(verify)
