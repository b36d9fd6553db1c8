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

from typing import TYPE_CHECKING

from consentry.lazy import lazy_exports

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
    "CHECKPOINT_PREFIX": "consentry.training.checkpoints",
    "CLASS_IMAGES_DIR": "consentry.training.class_images",
    "KIND_DEFAULTS": "consentry.training.config",
    "PRIOR_FILE_NAMES": "consentry.training.loop",
    "Photo": "consentry.training.photos",
    "PriorKind": "consentry.training.config",
    "ProgressCallback": "consentry.training.loop",
    "TrainConfig": "consentry.training.config",
    "TrainOutcome": "consentry.training.job",
    "TrainResult": "consentry.training.loop",
    "default_work_dir": "consentry.training.job",
    "model_folder_sha256": "consentry.training.base_model",
    "train_prior": "consentry.training.loop",
    "train_under_grant": "consentry.training.job",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
