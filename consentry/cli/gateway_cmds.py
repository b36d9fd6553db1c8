"""``consentry check``, ``generate`` and ``restore``: the gateway on the command line.

Job parameters are bounded by the one ``consentry.gate.policy.Limits`` (the
HTTP service uses the same values and wording): a job outside them fails with
exit 2 before anything runs or is logged. The operator's CLI shows subject ids in
reasons; the HTTP service redacts them for grantees.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consentry.cli.common import (
    DbOpt,
    DeviceOpt,
    DtypeOpt,
    HomeOpt,
    JsonOpt,
    emit_json,
    open_registry,
)
from consentry.cli.vocabulary import receipt_view

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = ["job_prior", "register"]

PRIOR_HELP = "A registered prior: its id or its SHA-256."


_ID = re.compile(r"\b(?:sub|gte)_[0-9a-f]+\b")


def id_names(registry: Registry) -> dict[str, str]:
    """Subject and grantee ids -> their names, to print beside ids in reasons."""
    return {r.id: r.display_name for r in registry.list_subjects()} | {
        r.id: r.name for r in registry.list_grantees()
    }


def named(reason: str, names: dict[str, str]) -> str:
    """``reason`` with each known subject or grantee id followed by its name."""
    return _ID.sub(lambda m: f"{m[0]} ({names[m[0]]})" if m[0] in names else m[0], reason)


def job_prior(registry: Registry, ref: str | None) -> str | None:
    """The prior id for a job's ``--prior`` (an id, or the SHA-256 of one prior)."""
    from consentry.registry.refs import prior_id_of

    if ref is None:
        return None
    with registry.db.read() as session:
        return prior_id_of(session, ref)


ReviewOpt = Annotated[
    str | None,
    typer.Option("--review", help="Resubmit a held job under this held decision's approval."),
]


def check_command(
    images: Annotated[list[Path] | None, typer.Argument(help="Input images.")] = None,
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    purpose: Annotated[str, typer.Option("--purpose", help="restore, generate or train.")] = "",
    prior: Annotated[str | None, typer.Option("--prior", help=PRIOR_HELP)] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="The job's prompt.")] = "",
    refuse_unknown_faces: Annotated[
        bool, typer.Option("--refuse-unknown-faces", help="Refuse faces of unregistered people.")
    ] = False,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    review: ReviewOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide whether a job may run; the decision is logged. Exit 0 allow, 1 refuse or
    hold (HELD: queued for 'consentry review'), 2 refuse because the database
    contradicts its signed log (integrity error)."""
    from consentry.errors import InputError
    from consentry.faces.engines import get_engine
    from consentry.gate import CheckRequest, Gateway, is_integrity_failure
    from consentry.limits import Limits

    if not requester or not purpose:
        raise InputError("give --as GRANTEE and --purpose P")
    Limits().check_job(images=len(images or []), prompt=prompt)
    with open_registry(home, db) as registry:
        gateway = Gateway(registry, get_engine(engine), refuse_unknown_faces=refuse_unknown_faces)
        receipt = gateway.check(
            CheckRequest(
                requester,
                purpose,
                list(images or []),
                prompt,
                job_prior(registry, prior),
                review=review,
            )
        )
        names = {} if as_json else id_names(registry)
    if as_json:
        emit_json(receipt_view(receipt.to_json()))
    else:
        typer.echo(
            _outcome(receipt.allowed, receipt.held, "ALLOW", "REFUSE")
            + (
                f" (decision {receipt.decision_id}, log index {receipt.log_index})"
                if receipt.decision_id
                else " (not logged: unknown requester)"
            )
        )
        for reason in receipt.reasons:
            typer.echo(f"  {named(reason, names)}")
    if not receipt.allowed:
        raise typer.Exit(2 if is_integrity_failure(receipt) else 1)


def _outcome(allowed: bool, held: bool, allow: str, refuse: str) -> str:
    """The verdict's word: ``allow``, HELD (queued for a person's review), ``refuse``."""
    return allow if allowed else "HELD" if held else refuse


def _run(
    purpose: str,
    requester: str,
    prompt: str,
    model: Path,
    out: Path,
    image: Path | None,
    prior: str | None,
    steps: int,
    size: int,
    seed: int,
    strength: float | None,
    engine: str,
    home: Path | None,
    db: str | None,
    as_json: bool,
    device: str | None,
    dtype: str | None,
    review: str | None = None,
) -> None:
    from consentry.errors import InputError
    from consentry.faces.engines import get_engine
    from consentry.gate import Gateway, RunRequest, is_integrity_failure
    from consentry.generation.placement import resolve_placement
    from consentry.limits import Limits

    if not requester:
        raise InputError("give --as GRANTEE")
    Limits().check_job(
        images=0 if image is None else 1, steps=steps, size=size, strength=strength, prompt=prompt
    )
    resolve_placement(device, dtype)  # a bad name fails here, before anything is logged
    if out.exists():
        raise InputError(f"{out} exists; not overwriting")
    with open_registry(home, db) as registry:
        gateway = Gateway(registry, get_engine(engine))
        receipt = gateway.run(
            RunRequest(
                requester,
                purpose,
                prompt,
                model,
                image,
                job_prior(registry, prior),
                steps,
                size,
                seed,
                0.6 if strength is None else strength,
                device=device,
                dtype=dtype,
                review=review,
            ),
        )
        names = {} if as_json else id_names(registry)
    written: list[str] = []
    for number, data in enumerate(receipt.outputs):
        target = out if len(receipt.outputs) == 1 else out.with_name(f"{out.stem}-{number}.png")
        target.write_bytes(data)
        written.append(str(target))
    if as_json:
        emit_json(receipt_view(receipt.to_json()) | {"written": written})
    else:
        typer.echo(
            _outcome(receipt.allowed, receipt.held, "RELEASED " + ", ".join(written), "REFUSED")
        )
        typer.echo(f"  decision {receipt.decision_id} (log index {receipt.log_index})")
        for reason in receipt.reasons:
            typer.echo(f"  {named(reason, names)}")
    if not receipt.allowed:
        raise typer.Exit(2 if is_integrity_failure(receipt) else 1)


StepsOpt = Annotated[int, typer.Option("--steps", help="Diffusion steps (the job limit applies).")]
SizeOpt = Annotated[int, typer.Option("--size", help="Output width and height in pixels.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]


def generate_command(
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    prompt: Annotated[str, typer.Option("--prompt", help="What to generate.")] = "",
    model: Annotated[Path, typer.Option("--model", help="Local diffusers model folder.")] = Path(),
    out: Annotated[Path, typer.Option("-o", "--out", help="Output PNG (signed).")] = Path(
        "out.png"
    ),
    prior: Annotated[str | None, typer.Option("--prior", help=PRIOR_HELP)] = None,
    steps: StepsOpt = 20,
    size: SizeOpt = 512,
    seed: SeedOpt = 0,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    review: ReviewOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate through the gateway: checked, post-checked, logged and signed."""
    _run(
        "generate",
        requester,
        prompt,
        model,
        out,
        None,
        prior,
        steps,
        size,
        seed,
        None,
        engine,
        home,
        db,
        as_json,
        device,
        dtype,
        review,
    )


def restore_command(
    image: Annotated[Path, typer.Argument(help="The image to restore.")],
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    model: Annotated[Path, typer.Option("--model", help="Local diffusers model folder.")] = Path(),
    out: Annotated[Path, typer.Option("-o", "--out", help="Output PNG (signed).")] = Path(
        "out.png"
    ),
    prior: Annotated[str | None, typer.Option("--prior", help=PRIOR_HELP)] = None,
    prompt: Annotated[
        str, typer.Option("--prompt", help="Text guiding the diffusers img2img restoration.")
    ] = "a sharp photo",
    steps: StepsOpt = 20,
    size: SizeOpt = 512,
    seed: SeedOpt = 0,
    strength: Annotated[
        float, typer.Option("--strength", help="img2img strength, in (0, 1].")
    ] = 0.6,
    engine: Annotated[str, typer.Option("--engine", help="Face engine.")] = "sface",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    review: ReviewOpt = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore an image through the gateway: personalised restoration with an
    exemplars prior (no model needed), else diffusers img2img on --model."""
    _run(
        "restore",
        requester,
        prompt,
        model,
        out,
        image,
        prior,
        steps,
        size,
        seed,
        strength,
        engine,
        home,
        db,
        as_json,
        device,
        dtype,
        review,
    )


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
    app.command("generate")(generate_command)
    app.command("restore")(restore_command)
