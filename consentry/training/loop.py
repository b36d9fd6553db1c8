"""The training loop: :func:`train_prior` fine-tunes a base model on a subject's photos.

:func:`train_prior` trains a local Stable Diffusion folder (the layout
:func:`consentry.generation.backends.diffusers_backend.load_pipeline` reads) on
in-memory photos and writes one ``.safetensors`` prior in the format
:func:`~consentry.generation.backends.diffusers_backend.apply_prior` loads (see
:mod:`consentry.training.trainer` for each kind's file). It checks nothing about
consent: the only caller that may train a registered subject's photos is
:func:`consentry.training.job.train_under_grant`, which needs a ``train`` grant.

Loss: the standard noise-prediction MSE in latent space (the model's VAE, a
``DDPMScheduler`` built from the model's scheduler config, ``epsilon`` or
``v_prediction`` targets), plus, for ``lora`` and ``dreambooth`` with
``prior_loss_weight > 0``, the prior-preservation term on class images
(:mod:`consentry.training.class_images`). Optimiser: AdamW (weight decay 1e-2),
constant learning rate, gradient norm clipped to 1.

Invariants
----------
* The prior is written with :func:`consentry.fsutil.atomic_output` to
  ``work_dir / PRIOR_FILE_NAMES[kind]``: whole or absent. :class:`TrainResult`
  carries its SHA-256 (the digest the registry binds it to).
* A ``work_dir`` holding checkpoints is refused unless ``resume=True``; a resume
  continues from the newest checkpoint that :func:`~consentry.training.checkpoints.check_resumable`
  accepts (see :mod:`consentry.training.checkpoints`).
* A non-finite loss stops training with :class:`~consentry.errors.EngineError`;
  nothing is written for it.

Devices
    ``device`` (see :mod:`consentry.generation.placement`) puts the pipeline, the
    latents and every step's arithmetic on a CUDA GPU or the CPU; the weights stay
    in float32 on both. The random draws still come from the one CPU generator
    (moved to the device after drawing), so a checkpoint's RNG state means the
    same on every device and a run checkpointed on one device resumes on another.
    Files (priors, checkpoints) are always written from CPU copies.

Costs
    Memory: the pipeline in float32 plus, for ``dreambooth``, gradients and two
    AdamW moments of the UNet (about 4x the UNet: 13.6 GB for SD 1.5); a
    ``dreambooth`` checkpoint holds the UNet and both moments (10 GB for SD 1.5).
    Time on the tiny test pipeline (64x64, batch 1, one torch thread), CPU time
    per step: textual inversion 90 ms, LoRA 105 ms (175 ms with prior
    preservation, which doubles the UNet batch), DreamBooth 150 ms (215 ms).
    Bitwise-equal resumes need the same torch thread count as the first run (on
    a GPU, the same device and deterministic kernels; cuDNN's defaults are not).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from consentry.errors import EngineError, InputError
from consentry.fsutil import atomic_output
from consentry.generation.backends.diffusers_backend import load_pipeline
from consentry.generation.placement import Placement, resolve_placement
from consentry.hashing import sha256_file
from consentry.training.base_model import model_folder_sha256
from consentry.training.checkpoints import (
    Checkpoint,
    check_resumable,
    list_checkpoints,
    load_checkpoint,
    run_identity,
    write_checkpoint,
)
from consentry.training.class_images import class_images
from consentry.training.config import PriorKind, TrainConfig
from consentry.training.photos import Photo, pixels_sha256, prepare_photos
from consentry.training.trainer import Latents, Trainer, encode

__all__ = ["PRIOR_FILE_NAMES", "ProgressCallback", "TrainResult", "train_prior"]

ProgressCallback = Callable[[int, int, float], None]
"""Called after every step as ``progress(step, total_steps, loss)``."""

PRIOR_FILE_NAMES: dict[str, str] = {
    "textual_inversion": "textual_inversion.safetensors",
    "lora": "lora.safetensors",
    "dreambooth": "dreambooth.safetensors",
}
"""The file each kind writes in ``work_dir``."""

_WEIGHT_DECAY = 1e-2
_MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_prior` produced: register ``path`` by ``sha256``."""

    path: Path
    sha256: str
    kind: PriorKind
    token: str
    base_model_sha256: str
    config_sha256: str
    final_loss: float
    steps: int
    resumed_from: int
    train_seconds: float
    device: str = "cpu float32"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``path`` as a string)."""
        record = asdict(self)
        record["path"] = str(self.path)
        return record


def _noise_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = scheduler.config["prediction_type"]
    if prediction not in ("epsilon", "v_prediction"):
        raise InputError(f"the model's scheduler predicts {prediction!r}: not supported")
    return cast(DDPMScheduler, scheduler)


def _prepare_work_dir(work_dir: Path, resume: bool) -> Path:
    if not isinstance(work_dir, str | Path) or not str(work_dir).strip():
        raise InputError(f"work_dir must be a folder path, not {work_dir!r}")
    folder = Path(work_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"work_dir {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not resume and list_checkpoints(folder):
        raise InputError(
            f"work_dir {folder} already holds checkpoints: pass resume=True to continue "
            "that run, or use an empty folder"
        )
    return folder


def _training_placement(device: str | Placement | None) -> Placement:
    if isinstance(device, Placement):
        if device.dtype != torch.float32:
            raise InputError(f"training keeps its weights in float32, not {device.dtype}")
        return device
    return resolve_placement(device, purpose="training")


def train_prior(
    model_dir: Path,
    photos: Sequence[Photo],
    config: TrainConfig,
    work_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    device: str | Placement | None = None,
) -> TrainResult:
    """Train ``config.kind`` on ``photos`` against the model in ``model_dir``.

    ``device`` says where: a :class:`~consentry.generation.placement.Placement`
    with a float32 dtype, or a device name (``None``: ``CONSENTRY_DEVICE``, then
    ``auto``); weights stay in float32 everywhere. A checkpoint written on one
    device resumes on another.

    ``photos`` are in-memory RGB images (never written anywhere); each is
    centre-cropped to a square and resized to ``config.resolution``, and its
    shorter side must be at least that. The prior is written atomically to
    ``work_dir / PRIOR_FILE_NAMES[kind]``; checkpoints and class images also live
    in ``work_dir``. With ``resume=True`` training continues from the newest
    checkpoint there (or starts afresh if there is none); without it a
    ``work_dir`` holding checkpoints is refused. An exception raised by
    ``progress`` stops training and propagates (checkpoints already written stay).

    Raises :class:`InputError` (bad config, photos, model folder or work_dir; a
    checkpoint that does not match), :class:`ImageError` (a photo of the wrong
    type or too small) and :class:`EngineError` (the loss became non-finite).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, not {type(config).__name__}")
    placement = _training_placement(device)
    arrays = prepare_photos(photos, config.resolution)
    folder = _prepare_work_dir(work_dir, resume)
    base_sha256 = model_folder_sha256(model_dir)
    identity = run_identity(config, base_sha256, pixels_sha256(arrays))
    checkpoint = None
    if resume and (found := list_checkpoints(folder)):
        checkpoint = check_resumable(found[-1][1], identity)
        if checkpoint.step > config.steps:
            raise InputError(f"checkpoint {checkpoint.folder} is past the {config.steps} steps")

    pipe = load_pipeline(model_dir, "text2img", placement)
    class_arrays = (
        class_images(pipe, config, folder, base_sha256) if config.uses_prior_preservation else []
    )
    instance_latents = encode(pipe, arrays)
    class_latents = encode(pipe, class_arrays) if class_arrays else None
    del arrays
    scheduler = _noise_scheduler(pipe)
    trainer = Trainer(pipe, config)
    try:
        return _run(
            trainer, scheduler, instance_latents, class_latents, folder, identity,
            checkpoint, progress, placement,
        )  # fmt: skip
    finally:
        trainer.close()


def _run(
    trainer: Trainer,
    scheduler: DDPMScheduler,
    instance: Latents,
    classes: Latents | None,
    work_dir: Path,
    identity: dict[str, Any],
    checkpoint: Checkpoint | None,
    progress: ProgressCallback | None,
    placement: Placement,
) -> TrainResult:
    config = trainer.config
    device = placement.device
    unet = trainer.pipe.unet
    params = list(trainer.params.values())
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=_WEIGHT_DECAY, foreach=False
    )
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    step, loss_value = 0, float("nan")
    if checkpoint is not None:
        load_checkpoint(checkpoint, trainer, optimizer, generator)
        step, loss_value = checkpoint.step, checkpoint.loss
    resumed_from = step
    timesteps_total = int(scheduler.config["num_train_timesteps"])
    velocity = scheduler.config["prediction_type"] == "v_prediction"
    batch = config.batch_size
    started = time.perf_counter()
    while step < config.steps:
        picks = torch.randint(len(instance.mean), (batch,), generator=generator)
        latents = instance.sample(picks, generator)
        if classes is not None:
            class_picks = torch.randint(len(classes.mean), (batch,), generator=generator)
            latents = torch.cat([latents, classes.sample(class_picks, generator)])
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(timesteps_total, (len(latents),), generator=generator)
        timesteps = timesteps.to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)  # type: ignore[arg-type]
        target = scheduler.get_velocity(latents, noise, timesteps) if velocity else noise  # type: ignore[arg-type]
        states = trainer.conditioning(batch, classes is not None)
        prediction = unet(noisy, timesteps, states).sample
        if classes is None:
            loss = F.mse_loss(prediction.float(), target.float())
        else:
            pred_instance, pred_class = prediction.chunk(2)
            target_instance, target_class = target.chunk(2)
            loss = F.mse_loss(pred_instance.float(), target_instance.float())
            loss = loss + config.prior_loss_weight * F.mse_loss(
                pred_class.float(), target_class.float()
            )
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise EngineError(
                f"the training loss became {loss_value} at step {step + 1}: lower the "
                "learning rate or check the model weights"
            )
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            write_checkpoint(work_dir, step, loss_value, trainer, optimizer, generator, identity)
        if progress is not None:
            progress(step, config.steps, loss_value)
    train_seconds = time.perf_counter() - started
    target_path = work_dir / PRIOR_FILE_NAMES[config.kind]
    with atomic_output(target_path) as staged:
        trainer.save(staged)
    return TrainResult(
        path=target_path,
        sha256=sha256_file(target_path),
        kind=config.kind,
        token=config.token,
        base_model_sha256=identity["base_model_sha256"],
        config_sha256=identity["config_sha256"],
        final_loss=loss_value,
        steps=step,
        resumed_from=resumed_from,
        train_seconds=train_seconds,
        device=placement.describe(),
    )
