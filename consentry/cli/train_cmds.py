"""``consentry prior train``: train a subject's prior under a ``train`` grant.

The configuration is :meth:`consentry.training.TrainConfig.for_kind` with the
options given: every default (the per-kind token and learning rate included)
comes from :mod:`consentry.training.config`, none is the CLI's own, so a library
caller and this command train the same recipe. ``--dry-run`` prints it and stops.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.common import DbOpt, DeviceOpt, HomeOpt, JsonOpt, emit_json, open_registry
from consentry.training.config import TrainConfig

__all__ = ["register", "train_config"]

_DEFAULTS: dict[str, Any] = {
    field.name: field.default
    for field in dataclasses.fields(TrainConfig)
    if field.default is not dataclasses.MISSING
}
"""The kind-independent field defaults, shown by ``--help`` (the same values ``for_kind`` uses)."""


def train_config(
    kind: str,
    *,
    token: str | None = None,
    learning_rate: float | None = None,
    **options: Any,
) -> TrainConfig:
    """The configuration ``prior train`` trains: ``TrainConfig.for_kind`` of ``kind``
    (``-`` or ``_`` between words) with every option that was given (not None)."""
    given = {"token": token, "learning_rate": learning_rate, **options}
    changes = {name: value for name, value in given.items() if value is not None}
    return TrainConfig.for_kind(kind.replace("-", "_"), **changes)


def train_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    kind: Annotated[
        str, typer.Option("--kind", help="textual-inversion, lora or dreambooth.")
    ] = "lora",
    model: Annotated[Path, typer.Option("--model", help="Local diffusers model folder.")] = Path(),
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps.")] = _DEFAULTS["steps"],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from a checkpoint.")] = False,
    resolution: Annotated[
        int, typer.Option("--resolution", help="Training size; kept photos are 256 px.")
    ] = _DEFAULTS["resolution"],
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="Learning rate (default: the kind's).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Placeholder token or identifier word (default: the kind's)."),
    ] = None,
    class_images: Annotated[
        int, typer.Option("--class-images", help="Prior-preservation images (lora, dreambooth).")
    ] = _DEFAULTS["num_class_images"],
    class_image_steps: Annotated[
        int, typer.Option("--class-image-steps", help="Sampling steps per class image.")
    ] = _DEFAULTS["class_image_steps"],
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Checkpoint period in steps (0: none).")
    ] = _DEFAULTS["checkpoint_every"],
    seed: Annotated[int, typer.Option("--seed", help="Random seed for training.")] = _DEFAULTS[
        "seed"
    ],
    device: DeviceOpt = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Checkpoints and class images.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the configuration that would be trained; train nothing."
        ),
    ] = False,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a textual inversion, LoRA or DreamBooth prior from the subject's kept photos.

    Needs an active grant giving the grantee the ``train`` purpose; checked before
    and after training (a revocation while it runs wins). The result is registered
    as a prior bound to its SHA-256, the base model's hash, the configuration and
    the grant. Photos are decrypted in memory only. Weights stay in float32 on
    every device; ``--device cuda`` trains on a GPU.
    """
    from consentry.errors import InputError

    config = train_config(
        kind,
        token=token,
        learning_rate=learning_rate,
        steps=steps,
        resolution=resolution,
        seed=seed,
        num_class_images=class_images,
        class_image_steps=class_image_steps,
        checkpoint_every=checkpoint_every,
    )
    if dry_run:  # nothing opened, decided or logged
        if as_json:
            emit_json({"config": config.to_dict(), "config_sha256": config.sha256()})
        else:
            typer.echo(f"{config.to_json()}\nconfig sha256 {config.sha256()}")
        return
    if not requester:
        raise InputError("give --as GRANTEE")
    _train(config, subject, model, requester, resume, device, work_dir, home, db, as_json)


def _train(
    config: TrainConfig,
    subject: str,
    model: Path,
    requester: str,
    resume: bool,
    device: str | None,
    work_dir: Path | None,
    home: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from consentry.registry.views import prior_json
    from consentry.training.job import train_under_grant

    # our bar is drawn on stderr and only on a terminal: piped, stdout carries the
    # answer alone and stderr nothing but a one-line error (see consentry.cli.quiet)
    console = Console(stderr=True)
    with (
        open_registry(home, db) as registry,
        Progress(
            TextColumn("training {task.fields[kind]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=console,
            transient=as_json,
            disable=as_json or not console.is_terminal,
        ) as bar,
    ):
        task = bar.add_task("train", total=config.steps, kind=config.kind, loss=0.0)

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        outcome = train_under_grant(
            registry,
            requester,
            subject,
            model,
            config,
            work_dir=work_dir,
            resume=resume,
            progress=progress,
            device=device,
        )
    if as_json:
        emit_json(
            {
                "prior": prior_json(outcome.prior),
                "training": outcome.result.to_dict(),
                "decisions": [outcome.start.id, outcome.finish.id],
            }
        )
    else:
        typer.echo(
            f"{outcome.prior.id}: {config.kind} prior for {outcome.prior.subject_id}, "
            f"sha256 {outcome.prior.sha256} (log index {outcome.prior.log_index}); "
            f"{outcome.result.steps} steps, final loss {outcome.result.final_loss:.4f}"
        )
        typer.echo(
            "  to use it, a grant must name it: consentry grant SUBJECT --to GRANTEE "
            f"--purpose generate --prior {outcome.prior.sha256}"
        )


def register(prior_app: typer.Typer) -> None:
    prior_app.command("train")(train_command)
