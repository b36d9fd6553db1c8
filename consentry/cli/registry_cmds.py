"""Subjects, grantees, grants, revocations and priors on the command line.

Every command that changes the registry also signs a fresh checkpoint, so the
home's witness copy always covers the newest entry.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from consentry.cli import consent_cmds, faces_cmds, train_cmds
from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.errors import InputError
from consentry.hashing import sha256_file

if TYPE_CHECKING:
    from consentry.registry.models import Grant
    from consentry.registry.signing import SigningKey
    from consentry.registry.store import GrantStatus, Registry

# The registry's modules (SQLModel, cryptography) are imported inside the commands,
# so the CLI, and its --help, start without them.

__all__ = ["register"]

subject_app = typer.Typer(help="Register and inspect subjects.", no_args_is_help=True)
grantee_app = typer.Typer(help="Register and inspect grantees.", no_args_is_help=True)
prior_app = typer.Typer(help="Register and inspect personalised priors.", no_args_is_help=True)

SubjectKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--subject-key",
        help="The subject's private key file, when the subject holds a key.",
        exists=False,
    ),
]


PrepareOpt = Annotated[
    bool,
    typer.Option(
        "--prepare",
        help="Write the statement for the subject to sign on their own device "
        "('consentry sign'), instead of recording it; then 'consentry submit'.",
    ),
]
SignWithinOpt = Annotated[
    float,
    typer.Option("--sign-within", help="With --prepare: days the subject has to sign (max 30)."),
]


def _subject_key(path: Path | None) -> SigningKey | None:
    from consentry.registry.signing import SigningKey

    return None if path is None else SigningKey.load(path)


def _time(value: str | None) -> datetime | None:
    from consentry.registry.statements import parse_time

    return None if value is None else parse_time(value)


def _grantee_names(registry: Registry) -> dict[str, str]:
    return {r.id: r.name for r in registry.list_grantees()}


def _named_grant(
    grant: Grant, status: GrantStatus, subjects: dict[str, str], grantees: dict[str, str]
) -> dict[str, Any]:
    """A grant's JSON view with the subject's and grantee's names beside their ids."""
    from consentry.registry.views import grant_json

    return grant_json(grant, status) | {
        "subject_name": subjects.get(grant.subject_id),
        "grantee_name": grantees.get(grant.grantee_id),
    }


def _prior_hashes(registry: Registry, refs: list[str] | None) -> list[str]:
    from consentry.registry.refs import prior_sha256_of

    with registry.db.read() as session:
        return [prior_sha256_of(session, ref) for ref in refs or []]


def _end_time(value: str | None) -> datetime | None:
    from consentry.registry.statements import parse_end_time

    return None if value is None else parse_end_time(value)


# ---------------------------------------------------------------- subject
@subject_app.command("add")
def subject_add(
    name: Annotated[str, typer.Argument(help="The subject's display name.")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Another name.")] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="The subject's Ed25519 public key (PEM)."),
    ] = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a subject; with --public-key their grants need their signature too.

    A display name that another subject already has is accepted (two people may
    share a name) with a warning on stderr, since that name no longer picks one
    subject: refer to either by id.
    """
    from consentry.registry.signing import load_public_key
    from consentry.registry.views import subject_json

    key = load_public_key(public_key) if public_key is not None else None
    with open_registry(home, db) as registry:
        same = [s.id for s in registry.list_subjects() if s.display_name == name.strip()]
        row = registry.add_subject(name, alias or [], key)
        registry.checkpoint()
    if same:
        typer.echo(
            f"warning: {len(same)} other subject(s) already named {row.display_name!r} "
            f"({', '.join(same)}): the name is now ambiguous, refer to them by id",
            err=True,
        )
    if as_json:
        emit_json(subject_json(row))
    else:
        typer.echo(row.id)


@subject_app.command("list")
def subject_list(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List subjects in registration order."""
    from consentry.registry.views import subject_json

    with open_registry(home, db) as registry:
        rows = registry.list_subjects()
    if as_json:
        emit_json([subject_json(r) for r in rows])
        return
    for row in rows:
        aliases = f" (aka {', '.join(row.aliases)})" if row.aliases else ""
        keyed = " [holds key]" if row.public_key else ""
        typer.echo(f"{row.id}  {row.display_name}{aliases}{keyed}")


@subject_app.command("show")
def subject_show(
    subject: Annotated[str, typer.Argument(help="Subject id, unique name or unique alias.")],
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one subject (by id or unique name) with their grants and priors."""
    from consentry.registry.views import prior_json, subject_json

    with open_registry(home, db) as registry:
        row = registry.get_subject(subject)
        grants = registry.list_grants(subject=row.id)
        priors = registry.list_priors(row.id)
        grantees = _grantee_names(registry)
    value = subject_json(row) | {
        "grants": [_named_grant(g, s, {row.id: row.display_name}, grantees) for g, s in grants],
        "priors": [prior_json(p) for p in priors],
    }
    if as_json:
        emit_json(value)
        return
    typer.echo(f"id:           {row.id}")
    typer.echo(f"name:         {row.display_name}")
    typer.echo(f"aliases:      {', '.join(row.aliases) or '-'}")
    typer.echo(f"holds key:    {'yes' if row.public_key else 'no'}")
    typer.echo(f"registered:   {row.created_at} (log index {row.log_index})")
    for grant, status in grants:
        to = f"{grantees.get(grant.grantee_id, '?')} ({grant.grantee_id})"
        typer.echo(f"grant:        {grant.id} to {to} {','.join(grant.purposes)} {status}")
    for prior in priors:
        typer.echo(f"prior:        {prior.id} {prior.kind} sha256 {prior.sha256}")


# ---------------------------------------------------------------- grantee
@grantee_app.command("add")
def grantee_add(
    name: Annotated[str, typer.Argument(help="The grantee's name (unique).")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="The grantee's Ed25519 public key (PEM).")
    ] = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a grantee and print its API key (shown once, stored only hashed)."""
    from consentry.registry.signing import load_public_key
    from consentry.registry.views import grantee_json

    key = load_public_key(public_key) if public_key is not None else None
    with open_registry(home, db) as registry:
        row, api_key = registry.add_grantee(name, key)
        registry.checkpoint()
    if as_json:
        emit_json(grantee_json(row) | {"api_key": api_key})
        return
    typer.echo(f"grantee id: {row.id}")
    typer.echo(f"API key:    {api_key}")
    typer.echo("Store the API key now: it is not shown again.", err=True)


@grantee_app.command("list")
def grantee_list(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List grantees."""
    from consentry.registry.views import grantee_json

    with open_registry(home, db) as registry:
        rows = registry.list_grantees()
    if as_json:
        emit_json([grantee_json(r) for r in rows])
        return
    for row in rows:
        typer.echo(f"{row.id}  {row.name}")


@grantee_app.command("rotate-key")
def grantee_rotate_key(
    grantee: Annotated[str, typer.Argument(help="Grantee id or unique name.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (signed into the log; optional).")
    ] = "",
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a grantee a new API key, printed once; their old key stops working.

    The new key is stored only as its hash, in a signed ``grantee-key`` log entry
    (the same change as POST /v1/grantees/{id}/rotate-key)."""
    from consentry.registry.grantee_keys import rotate_grantee_key
    from consentry.registry.views import grantee_key_change_json

    with open_registry(home, db) as registry:
        row, api_key = rotate_grantee_key(registry, grantee, reason)
        registry.checkpoint()
    if as_json:
        emit_json(grantee_key_change_json(row) | {"api_key": api_key})
        return
    typer.echo(f"grantee id: {row.grantee_id}")
    typer.echo(f"API key:    {api_key}")
    typer.echo(f"rotation {row.id} (log index {row.log_index}): the old key no longer works.")
    typer.echo("Store the API key now: it is not shown again.", err=True)


@grantee_app.command("disable")
def grantee_disable(
    grantee: Annotated[str, typer.Argument(help="Grantee id or unique name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (needed: signed into the log).")],
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable a grantee for good: no API key of theirs works from then on.

    Their grants and log entries stay. Final, and a signed ``grantee-key`` log entry
    (the same change as POST /v1/grantees/{id}/disable)."""
    from consentry.registry.grantee_keys import disable_grantee
    from consentry.registry.views import grantee_key_change_json

    with open_registry(home, db) as registry:
        row = disable_grantee(registry, grantee, reason)
        registry.checkpoint()
    if as_json:
        emit_json(grantee_key_change_json(row))
        return
    typer.echo(f"{row.grantee_id} disabled ({row.id}, log index {row.log_index})")


# ---------------------------------------------------------------- grants
def grant_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    to: Annotated[str, typer.Option("--to", help="Grantee id or unique name.")],
    purpose: Annotated[
        list[str], typer.Option("--purpose", help="restore, generate or train (repeatable).")
    ],
    prior: Annotated[
        list[str] | None,
        typer.Option(
            "--prior",
            help="A prior the grant covers: its id or SHA-256 (repeatable; a SHA-256 may "
            "name a prior not registered yet).",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start, ISO 8601 (default: now); a bare date is the start of that day, UTC.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="End, ISO 8601; a bare date includes that whole day (2027-06-30 ends at "
            "2027-07-01T00:00:00Z); a full timestamp is the exact end.",
        ),
    ] = None,
    evidence: Annotated[
        Path | None, typer.Option("--evidence", help="Consent evidence file (hashed, not kept).")
    ] = None,
    constraints: Annotated[
        str | None, typer.Option("--constraints", help="Constraints as a JSON object.")
    ] = None,
    subject_key: SubjectKeyOpt = None,
    prepare: PrepareOpt = False,
    sign_within: SignWithinOpt = 7.0,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant a grantee the use of a subject's likeness; prints the grant id."""
    from consentry.registry.detached import prepare_grant, sign_window
    from consentry.registry.views import grant_json

    evidence_sha256 = None
    if evidence is not None:
        try:
            evidence_sha256 = sha256_file(evidence)
        except OSError as exc:
            raise InputError(f"cannot read evidence {evidence}: {exc.strerror}") from exc
    parsed_constraints: dict[str, Any] | None = None
    if constraints is not None:
        try:
            parsed_constraints = json.loads(constraints)
        except json.JSONDecodeError as exc:
            raise InputError(f"--constraints is not JSON: {exc}") from exc
        if not isinstance(parsed_constraints, dict):
            raise InputError("--constraints must be a JSON object")
    if prepare:
        with open_registry(home, db) as registry:
            envelope = prepare_grant(
                registry,
                subject,
                to,
                purpose,
                priors=_prior_hashes(registry, prior),
                not_before=_time(start),
                not_after=_end_time(until),
                constraints=parsed_constraints,
                evidence_sha256=evidence_sha256,
                sign_within=sign_window(sign_within),
            )
        consent_cmds.write_prepared(envelope)
        return
    with open_registry(home, db) as registry:
        row = registry.grant(
            subject,
            to,
            purpose,
            priors=_prior_hashes(registry, prior),
            not_before=_time(start),
            not_after=_end_time(until),
            constraints=parsed_constraints,
            evidence_sha256=evidence_sha256,
            subject_key=_subject_key(subject_key),
        )
        registry.checkpoint()
    if as_json:
        emit_json(grant_json(row, "active" if start is None else None))
    else:
        typer.echo(row.id)


def revoke_command(
    grant_id: Annotated[str, typer.Argument(help="The grant to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the log).")],
    subject_key: SubjectKeyOpt = None,
    prepare: PrepareOpt = False,
    sign_within: SignWithinOpt = 7.0,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a grant; prints the revocation id."""
    from consentry.registry.detached import prepare_revocation, sign_window

    if prepare:
        with open_registry(home, db) as registry:
            envelope = prepare_revocation(registry, grant_id, reason, sign_window(sign_within))
        consent_cmds.write_prepared(envelope)
        return
    with open_registry(home, db) as registry:
        row = registry.revoke(grant_id, reason, _subject_key(subject_key))
        registry.checkpoint()
    if as_json:
        emit_json(
            {
                "id": row.id,
                "grant": row.grant_id,
                "reason": row.reason,
                "created_at": row.created_at,
                "log_index": row.log_index,
            }
        )
    else:
        typer.echo(row.id)


def grants_command(
    subject: Annotated[str | None, typer.Option("--subject", help="Subject id or name.")] = None,
    grantee: Annotated[str | None, typer.Option("--grantee", help="Grantee id or name.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only grants active now.")] = False,
    review_due: Annotated[
        bool, typer.Option("--review-due", help="Only active grants past their review date.")
    ] = False,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List grants with their status now."""
    from consentry.registry.statements import format_time

    with open_registry(home, db) as registry:
        rows = registry.list_grants(subject, grantee, active_only=active or review_due)
        now = format_time(registry.now())
        subjects = {r.id: r.display_name for r in registry.list_subjects()}
        grantees = _grantee_names(registry)
    if review_due:
        rows = [(g, s) for g, s in rows if g.review_by is not None and g.review_by <= now]
    if as_json:
        emit_json([_named_grant(g, s, subjects, grantees) for g, s in rows])
        return
    for grant, status in rows:
        until = grant.not_after or "no end"
        typer.echo(
            f"{grant.id}  {subjects.get(grant.subject_id, '?')} ({grant.subject_id}) -> "
            f"{grantees.get(grant.grantee_id, '?')} ({grant.grantee_id})  "
            f"{','.join(grant.purposes)}  {grant.not_before}..{until}  {status}"
        )


# ---------------------------------------------------------------- priors
@prior_app.command("add")
def prior_add(
    subject: Annotated[str, typer.Argument(help="Subject id, unique name or unique alias.")],
    file: Annotated[
        Path | None,
        typer.Argument(help="The prior's file (hashed with SHA-256); none for exemplars."),
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="textual-inversion, lora, dreambooth or exemplars.")
    ] = "",
    base_model: Annotated[str, typer.Option("--base-model", help="Base model id.")] = "",
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a personalised prior for a subject; prints the prior id.

    A weights prior must be a well-formed ``.safetensors`` file (pickle checkpoints
    are refused, exit 2), and a file already registered for another subject is
    refused (exit 1): a prior's bytes belong to one subject.

    ``--kind exemplars`` registers the subject's kept enrollment photos (enroll with
    --keep-photos) as the prior used by personalised restoration; it takes no file.
    """
    from consentry.registry.views import prior_json

    kind = kind.replace("-", "_")
    with open_registry(home, db) as registry:
        if kind == "exemplars":
            if file is not None:
                raise InputError("an exemplars prior is made from kept photos: give no file")
            from consentry.generation.exemplars import register_exemplars

            row = register_exemplars(registry, subject)
        else:
            if file is None:
                raise InputError(f"a {kind or 'weights'} prior needs its file")
            from consentry.generation.backends.base import check_prior_file
            from consentry.registry.prior_files import store_prior_file

            check_prior_file(file, kind)  # pickles refused by name; the header is checked next
            row = registry.add_prior(subject, kind, base_model, file)
            store_prior_file(registry, row, file)
        registry.checkpoint()
    if as_json:
        emit_json(prior_json(row))
    else:
        typer.echo(row.id)


@prior_app.command("list")
def prior_list(
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only this subject's priors (id or name).")
    ] = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered priors."""
    from consentry.registry.views import prior_json

    with open_registry(home, db) as registry:
        rows = registry.list_priors(subject)
    if as_json:
        emit_json([prior_json(r) for r in rows])
        return
    for row in rows:
        typer.echo(f"{row.id}  {row.subject_id}  {row.kind}  {row.sha256}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    faces_cmds.register(app, subject_app)
    app.add_typer(subject_app, name="subject")
    app.add_typer(grantee_app, name="grantee")
    train_cmds.register(prior_app)
    app.add_typer(prior_app, name="prior")
    app.command("grant")(grant_command)
    app.command("revoke")(revoke_command)
    consent_cmds.register(app, subject_app)
    app.command("grants")(grants_command)
