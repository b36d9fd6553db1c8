"""Training personalised priors (textual inversion, DreamBooth-LoRA, full DreamBooth).

Modules, each with one job:

``config``
    :class:`TrainConfig`: the recipe, validated at construction, its canonical
    JSON and SHA-256; :meth:`TrainConfig.for_kind` and :data:`KIND_DEFAULTS`, the
    one table of per-kind defaults (the CLI builds its configuration with it).
``photos``
    The subject's photos checked and squared, in memory only.
``base_model``
    :func:`model_folder_sha256`, the identity of the base model folder.
``class_images``
    Prior-preservation images drawn by the base model, cached on disk.
``trainer``
    What each kind trains and the prior file it writes (deterministic bytes).
``checkpoints``
    ``checkpoint-N/`` folders (``state.safetensors`` + ``meta.json``), written
    whole, hash-checked, resumed only by the same configuration, model and photos.
``loop``
    :func:`train_prior`: the optimisation loop and the atomic write of the prior.
``job``
    :func:`train_under_grant`: the only way a registered subject's photos are
    trained on, under an active ``train`` grant checked before and after
    training, with both decisions logged and the prior registered by SHA-256.

Invariants
----------
* Training a registered subject happens only under a ``train`` grant
  (:mod:`~consentry.training.job`); :func:`train_prior` itself checks no consent
  and takes photos already in memory.
* Photos never touch the disk; every file training writes (prior, checkpoint,
  class image) appears whole or not at all (:mod:`consentry.fsutil`).

Importing this package imports neither torch nor diffusers: the names below load
their module on first use (``config`` is light; the rest need torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consentry.training.base_model import model_folder_sha256
    from consentry.training.checkpoints import CHECKPOINT_PREFIX
    from consentry.training.class_images import CLASS_IMAGES_DIR
    from consentry.training.config import KIND_DEFAULTS, PriorKind, TrainConfig
    from consentry.training.job import TrainOutcome, default_work_dir, train_under_grant
    from consentry.training.loop import (
        PRIOR_FILE_NAMES,
        ProgressCallback,
        TrainResult,
        train_prior,
    )
    from consentry.training.photos import Photo

__all__ = [
    "CHECKPOINT_PREFIX",
    "CLASS_IMAGES_DIR",
    "KIND_DEFAULTS",
    "PRIOR_FILE_NAMES",
    "Photo",
    "PriorKind",
    "ProgressCallback",
    "TrainConfig",
    "TrainOutcome",
    "TrainResult",
    "default_work_dir",
    "model_folder_sha256",
    "train_prior",
    "train_under_grant",
]

_HOMES = {
    "CHECKPOINT_PREFIX": "checkpoints",
    "CLASS_IMAGES_DIR": "class_images",
    "KIND_DEFAULTS": "config",
    "PRIOR_FILE_NAMES": "loop",
    "Photo": "photos",
    "PriorKind": "config",
    "ProgressCallback": "loop",
    "TrainConfig": "config",
    "TrainOutcome": "job",
    "TrainResult": "loop",
    "default_work_dir": "job",
    "model_folder_sha256": "base_model",
    "train_prior": "loop",
    "train_under_grant": "job",
}


def __getattr__(name: str) -> Any:
    """Load a re-exported name's module on first use (keeps ``import`` light)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
