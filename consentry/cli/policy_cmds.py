"""``consentry policy``: the registry's limits on grants (``registry.grant_policy``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from consentry.cli.common import HomeOpt, JsonOpt, emit_json
from consentry.config import Home, resolve_home

if TYPE_CHECKING:
    from consentry.registry.grant_policy import GrantPolicy

__all__ = ["app"]

app = typer.Typer(help="The registry's legal limits on grants.", no_args_is_help=True)


def _show(policy: GrantPolicy, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "grant_max_days": policy.max_days,
                "grant_review_days": policy.review_days,
                "grant_require_evidence": policy.require_evidence,
            }
        )
        return
    typer.echo(f"longest grant:      {policy.max_days or 'no limit'} days")
    typer.echo(f"review after:       {policy.review_days or 'no review date'} days")
    typer.echo(f"evidence required:  {'yes' if policy.require_evidence else 'no'}")


@app.command("show")
def show(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the limits new grants must meet."""
    from consentry.registry.grant_policy import policy_of

    _show(policy_of(Home(resolve_home(home))), as_json)


@app.command("set")
def set_policy(
    max_days: Annotated[
        int | None,
        typer.Option("--max-days", help="Longest grant in days (3650: 10 years); 0: no limit."),
    ] = None,
    review_days: Annotated[
        int | None,
        typer.Option("--review-days", help="Review date this many days after a grant starts."),
    ] = None,
    require_evidence: Annotated[
        bool | None,
        typer.Option("--require-evidence/--no-require-evidence", help="Require --evidence."),
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change the limits; they apply to grants made from now on (signed ones stand)."""
    from consentry.registry.grant_policy import GrantPolicy

    root = Home(resolve_home(home))
    values = root.read_config()
    current = GrantPolicy.from_config(values)
    wanted = GrantPolicy(
        current.max_days if max_days is None else (max_days or None),
        current.review_days if review_days is None else (review_days or None),
        current.require_evidence if require_evidence is None else require_evidence,
    )
    merged = values | wanted.as_config()
    GrantPolicy.from_config(merged)  # the same checks as when it is read
    root.write_config(merged)
    _show(wanted, as_json)
