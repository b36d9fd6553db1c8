"""Training checkpoints: written whole, hash-checked, resumed only by the same run.

Every ``checkpoint_every`` steps the loop writes ``work_dir/checkpoint-N/``:

``state.safetensors``
    The trainable weights (``param.<name>``), the AdamW moments
    (``optim.<name>.<key>``) and the training generator's state
    (``rng.generator``), as detached CPU tensors. No pickle is written or read.
``meta.json``
    ``format`` (``consentry-train-checkpoint/1``), ``step``, the last ``loss``,
    and the run's identity: ``config_sha256`` (:meth:`TrainConfig.sha256`),
    ``base_model_sha256`` (:func:`~consentry.training.base_model.model_folder_sha256`),
    ``photos_sha256`` (:func:`~consentry.training.photos.pixels_sha256`), plus
    ``state_sha256``, the SHA-256 of ``state.safetensors``.

Invariants
----------
* A checkpoint is whole or absent: both files are written into a staging folder
  in ``work_dir`` which is fsynced and renamed into place
  (:func:`consentry.fsutil.replace_durably`). The two newest are kept.
* :func:`check_resumable` refuses (:class:`~consentry.errors.InputError`) a
  checkpoint whose configuration, base model or photos hash differs from the
  run's, whose metadata is malformed, or whose state file's SHA-256 is not the
  one its ``meta.json`` names (damaged or replaced); :func:`load_checkpoint`
  refuses one whose tensors do not fit the run's parameters.
* Every random draw of a step comes from one seeded CPU ``torch.Generator``
  whose state is checkpointed, so on one machine with the same torch version and
  thread count a resumed run ends with weights bit-identical to an
  uninterrupted one, and a checkpoint written on one device resumes on another.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import safetensors.torch
import torch

from consentry.errors import InputError
from consentry.fsutil import replace_durably, staging_dir
from consentry.hashing import sha256_file
from consentry.training.config import TrainConfig, is_int, is_number
from consentry.training.trainer import Trainer, cpu_tensors

__all__ = [
    "CHECKPOINT_PREFIX",
    "Checkpoint",
    "check_resumable",
    "list_checkpoints",
    "load_checkpoint",
    "run_identity",
    "write_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_FORMAT = "consentry-train-checkpoint/1"
_KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that :func:`check_resumable` accepted: its step, loss and folder."""

    step: int
    loss: float
    folder: Path


def list_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder in ``work_dir``, oldest first."""
    found = []
    for path in work_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def run_identity(config: TrainConfig, base_sha256: str, photos_sha256: str) -> dict[str, Any]:
    """What binds a checkpoint to its run (written into, and checked against, ``meta.json``)."""
    return {
        "format": _CHECKPOINT_FORMAT,
        "config_sha256": config.sha256(),
        "base_model_sha256": base_sha256,
        "photos_sha256": photos_sha256,
    }


def write_checkpoint(
    work_dir: Path,
    step: int,
    loss: float,
    trainer: Trainer,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    identity: dict[str, Any],
) -> None:
    """Write ``checkpoint-<step>`` whole (see the module), then keep only the newest two."""
    tensors = cpu_tensors({f"param.{name}": p for name, p in trainer.params.items()})
    names = list(trainer.params)
    state = optimizer.state_dict()["state"]
    for index, entry in state.items():
        for key, value in entry.items():
            moment = torch.as_tensor(value).detach()
            tensors[f"optim.{names[index]}.{key}"] = moment.cpu().contiguous()
    tensors["rng.generator"] = generator.get_state()
    target = work_dir / f"{CHECKPOINT_PREFIX}{step}"
    with staging_dir(work_dir, f"{CHECKPOINT_PREFIX}{step}-") as staging:
        state_path = staging / "state.safetensors"
        safetensors.torch.save_file(tensors, str(state_path))
        meta = {**identity, "step": step, "loss": loss, "state_sha256": sha256_file(state_path)}
        meta_path = staging / "meta.json"
        meta_path.write_text(json.dumps(meta, sort_keys=True, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        replace_durably(staging, target)
    for _, old in list_checkpoints(work_dir)[:-_KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"checkpoint {folder} has no readable meta.json: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != _CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {folder} is not a {_CHECKPOINT_FORMAT} checkpoint")
    return meta


def check_resumable(folder: Path, identity: dict[str, Any]) -> Checkpoint:
    """Refuse a checkpoint made for another config, model or photo set."""
    meta = _read_checkpoint_meta(folder)
    labels = {
        "config_sha256": "the training configuration",
        "base_model_sha256": "the base model folder",
        "photos_sha256": "the photos",
    }
    for key, label in labels.items():
        if meta.get(key) != identity[key]:
            raise InputError(
                f"cannot resume from {folder}: {label} differs from the checkpoint's "
                f"({key} {identity[key]} vs {meta.get(key)}); use a new work_dir"
            )
    step, loss = meta.get("step"), meta.get("loss")
    if not is_int(step) or not is_number(loss):
        raise InputError(f"checkpoint {folder} has a malformed meta.json")
    state_path = folder / "state.safetensors"
    if not state_path.is_file() or sha256_file(state_path) != meta.get("state_sha256"):
        raise InputError(
            f"checkpoint {folder}: state.safetensors is not the one its meta.json names "
            "(damaged or replaced)"
        )
    return Checkpoint(cast(int, step), float(cast(float, loss)), folder)


def load_checkpoint(
    checkpoint: Checkpoint,
    trainer: Trainer,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    """Restore the weights, AdamW state and generator state of an accepted checkpoint."""
    state_path = checkpoint.folder / "state.safetensors"
    tensors = safetensors.torch.load_file(str(state_path), device="cpu")
    names = list(trainer.params)
    expected = {f"param.{name}" for name in names}
    present = {key for key in tensors if key.startswith("param.")}
    if present != expected or "rng.generator" not in tensors:
        raise InputError(f"checkpoint {checkpoint.folder} does not match this training run")
    with torch.no_grad():
        for name, param in trainer.params.items():
            value = tensors[f"param.{name}"]
            if value.shape != param.shape:
                raise InputError(f"checkpoint {checkpoint.folder}: {name} has the wrong shape")
            param.copy_(value)
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(names):
        prefix = f"optim.{name}."
        entry = {key[len(prefix) :]: v for key, v in tensors.items() if key.startswith(prefix)}
        if entry:
            optim_state[index] = entry
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
    generator.set_state(tensors["rng.generator"])
