"""``consentry review``: the queue of held jobs and a person's verdict on each (issue 14).

``list`` shows the holds no review has judged (from the signed log), ``show`` one
hold and its review, ``approve`` / ``reject`` sign and log a verdict. An approval
means the reviewer judged the held face is *not* the candidate subject; the client
then resubmits the same job with ``--review DECISION`` and every other match
still needs its grant.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, open_registry

__all__ = ["app"]

app = typer.Typer(help="Held jobs: the review queue (list, show, approve, reject).")

IdArg = Annotated[str, typer.Argument(help="The held decision's id (dec_...).")]
NoteOpt = Annotated[str, typer.Option("--note", help="Why (kept in the signed review).")]
ReviewerOpt = Annotated[
    str, typer.Option("--reviewer", help="Who reviews (default: $USER).", envvar="USER")
]


def _face_line(face: dict[str, Any]) -> str:
    return (
        f"image {face.get('image')} face {face.get('face')} bbox {face.get('bbox')}: "
        f"subject {face.get('subject')} similarity {float(face.get('similarity', 0.0)):.4f}"
    )


@app.command("list")
def list_command(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """The held jobs no review has judged yet, oldest first."""
    from consentry.registry.reviews import hold_json, pending_holds

    with open_registry(home, db) as registry:
        holds = pending_holds(registry)
    if as_json:
        emit_json([hold_json(h) for h in holds])
        return
    if not holds:
        typer.echo("no held jobs")
    for hold in holds:
        band = f"[{hold.band[0]:.4f}, {hold.band[1]:.4f})"
        for face in hold.faces:
            typer.echo(
                f"{hold.id}  {hold.time}  requester {hold.grantee}  subject "
                f"{face.get('subject')}  similarity {float(face.get('similarity', 0.0)):.4f}  "
                f"band {band}"
            )


@app.command("show")
def show_command(
    decision: IdArg, home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """One held job: what was held and its review, if any."""
    from consentry.registry.reviews import get_hold, hold_json

    with open_registry(home, db) as registry:
        hold, review = get_hold(registry, decision)
    if as_json:
        emit_json(hold_json(hold, review))
        return
    typer.echo(f"held decision {hold.id} (log index {hold.index}) at {hold.time}")
    typer.echo(f"  requester {hold.grantee}, purpose {hold.purpose}")
    for sha in hold.inputs:
        typer.echo(f"  input sha256 {sha}")
    for face in hold.faces:
        typer.echo(f"  {_face_line(face)}")
    typer.echo(f"  band [{hold.band[0]:.4f}, {hold.band[1]:.4f})")
    if review is None:
        typer.echo("  pending: no review yet")
    else:
        typer.echo(
            f"  {review.verdict} by {review.reviewer} at {review.time} "
            f"(review {review.id}): {review.note}"
        )


def _verdict(verdict: str, decision: str, note: str, reviewer: str, home: Any, db: Any) -> None:
    from consentry.registry.reviews import record_review

    with open_registry(home, db) as registry:
        row = record_review(registry, decision, verdict, reviewer or "operator", note)
    typer.echo(f"{verdict} {decision}: review {row.id} (log index {row.log_index})")


@app.command("approve")
def approve_command(
    decision: IdArg,
    note: NoteOpt = "",
    reviewer: ReviewerOpt = "",
    home: HomeOpt = None,
    db: DbOpt = None,
) -> None:
    """The held face is NOT the candidate subject: the job may be resubmitted with
    ``--review DECISION`` (every other match still needs its grant)."""
    _verdict("approve", decision, note, reviewer, home, db)


@app.command("reject")
def reject_command(
    decision: IdArg,
    note: NoteOpt = "",
    reviewer: ReviewerOpt = "",
    home: HomeOpt = None,
    db: DbOpt = None,
) -> None:
    """The held face is the candidate subject, or cannot be told: the job stays refused."""
    _verdict("reject", decision, note, reviewer, home, db)
