"""``consentry prior train``: train a subject's prior under a ``train`` grant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import DbOpt, DeviceOpt, HomeOpt, JsonOpt, emit_json, open_registry

__all__ = ["register"]


def train_command(
    subject: Annotated[str, typer.Argument(help="Subject id or unique name.")],
    kind: Annotated[
        str, typer.Option("--kind", help="textual-inversion, lora or dreambooth.")
    ] = "lora",
    model: Annotated[Path, typer.Option("--model", help="Local diffusers model folder.")] = Path(),
    requester: Annotated[str, typer.Option("--as", help="Grantee id or unique name.")] = "",
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps.")] = 400,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from a checkpoint.")] = False,
    resolution: Annotated[
        int, typer.Option("--resolution", help="Training size; kept photos are 256 px.")
    ] = 256,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Placeholder token or identifier word.")
    ] = None,
    class_images: Annotated[
        int, typer.Option("--class-images", help="Prior-preservation images (lora, dreambooth).")
    ] = 100,
    class_image_steps: Annotated[
        int, typer.Option("--class-image-steps", help="Sampling steps per class image.")
    ] = 25,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Checkpoint period in steps (0: none).")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Checkpoints and class images.")
    ] = None,
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
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from consentry.errors import InputError
    from consentry.generation.personalize import TrainConfig
    from consentry.generation.train_job import train_under_grant
    from consentry.registry.views import prior_json

    if not requester:
        raise InputError("give --as GRANTEE")
    normal = kind.replace("-", "_")
    defaults = {"textual_inversion": ("<sks-person>", 5e-3), "lora": ("sks", 1e-4)}
    default_token, default_lr = defaults.get(normal, ("sks", 5e-6))
    config = TrainConfig(
        kind=normal,  # type: ignore[arg-type]  # validated by TrainConfig
        token=token or default_token,
        steps=steps,
        learning_rate=learning_rate if learning_rate is not None else default_lr,
        resolution=resolution,
        seed=seed,
        num_class_images=class_images,
        class_image_steps=class_image_steps,
        checkpoint_every=checkpoint_every,
    )
    with (
        open_registry(home, db) as registry,
        Progress(
            TextColumn("training {task.fields[kind]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            transient=as_json,
            disable=as_json,
        ) as bar,
    ):
        task = bar.add_task("train", total=steps, kind=normal, loss=0.0)

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
            f"{outcome.prior.id}: {normal} prior for {outcome.prior.subject_id}, "
            f"sha256 {outcome.prior.sha256} (log index {outcome.prior.log_index}); "
            f"{outcome.result.steps} steps, final loss {outcome.result.final_loss:.4f}"
        )
        typer.echo(
            "  to use it, a grant must name it: consentry grant SUBJECT --to GRANTEE "
            f"--purpose generate --prior {outcome.prior.sha256}"
        )


def register(prior_app: typer.Typer) -> None:
    prior_app.command("train")(train_command)
