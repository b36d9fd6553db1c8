"""``consentry audit``: provenance, consent and registered faces across media."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import (
    DbOpt,
    HomeOpt,
    emit_json,
    is_stdout,
    json_report_target,
    open_registry,
    terminal_progress,
)

__all__ = ["register"]


def audit_command(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to audit.")],
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write the JSON report to this file; '-' prints it on stdout instead of "
            "the text lines (an error too, as {error: {code, message, hint}}).",
            callback=json_report_target,
        ),
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the HTML report to this file.")
    ] = None,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    home: HomeOpt = None,
    db: DbOpt = None,
) -> None:
    """Check every image: manifest, consent, and registered faces lacking provenance.

    Exit 1 when there are findings or unreadable files, 0 when everything is clean.
    With ``--json -`` stdout holds only the JSON report (the exit code is the same).
    """
    from consentry.faces.engines import get_engine
    from consentry.provenance.audit import audit_paths, write_reports

    face_engine = get_engine(engine)
    with open_registry(home, db) as registry, terminal_progress("auditing") as tick:
        report = audit_paths(registry, face_engine, paths, tick)
    to_stdout = is_stdout(json_file)
    write_reports(report, None if to_stdout else json_file, html_file)
    if to_stdout:
        emit_json(report.to_json())
        if report.findings or report.unreadable:
            raise typer.Exit(1)
        return
    for item in report.items:
        if item.error:
            typer.echo(f"UNREADABLE {item.path}: {item.error.removeprefix(f'{item.path}: ')}")
            continue
        for finding in item.findings:
            typer.echo(
                f"FINDING {item.path}: {finding.name or finding.subject_id} "
                f"(similarity {finding.similarity:.3f}): {finding.reason}"
            )
    typer.echo(
        f"{len(report.items)} file(s), {report.findings} finding(s), "
        f"{report.unreadable} unreadable"
        + (f"; JSON {json_file}" if json_file else "")
        + (f"; HTML {html_file}" if html_file else "")
    )
    if report.findings or report.unreadable:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
