"""What to train: :class:`TrainConfig`, its per-kind defaults and its canonical record.

A configuration is the whole recipe of one prior apart from the photos and the
base model: the registry records :meth:`TrainConfig.to_dict` in the prior's
signed details, checkpoints carry :meth:`TrainConfig.sha256` to refuse a resume
under another recipe, and the job's default work folder is named after it.

Invariants
----------
* A :class:`TrainConfig` that exists is valid: every field is checked at
  construction and a bad value raises :class:`~consentry.errors.InputError`.
* Per-kind defaults live in one place, :data:`KIND_DEFAULTS`, read by
  :meth:`TrainConfig.for_kind`. The constructor has no per-kind default (``token``
  and ``learning_rate`` must be given), so a library caller and
  ``consentry prior train`` (which builds its configuration with ``for_kind``)
  cannot drift apart; ``tests/unit/test_train_config.py`` checks they agree.
* :meth:`TrainConfig.to_json` is RFC 8785 canonical JSON of the fields that
  apply to the kind (the others are left out, so they cannot make two
  equivalent configurations hash differently), and :meth:`TrainConfig.sha256`
  is the SHA-256 of those bytes.
* This module imports neither torch nor diffusers: the CLI reads it at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

from consentry.errors import InputError
from consentry.hashing import sha256_hex
from consentry.registry.canonical import canonical_json  # no cryptography: CLI start-up

__all__ = [
    "KINDS",
    "KIND_DEFAULTS",
    "KindDefaults",
    "PriorKind",
    "TrainConfig",
    "is_int",
    "is_number",
]

PriorKind = Literal["textual_inversion", "lora", "dreambooth"]
"""The kinds of prior Consentry trains (the registry's names)."""

KINDS: tuple[str, ...] = get_args(PriorKind)

_CONFIG_FORMAT = "consentry-train-config/1"
_TRAINING_SIZE = 256
"""The default resolution: the size of the kept enrollment photos (``faces.quality``),
which are all a consent-gated job has to train on (photos are never upscaled)."""


@dataclass(frozen=True)
class KindDefaults:
    """What differs between kinds when the caller does not say.

    ``token``: textual inversion learns a *new* placeholder (it must not be a word
    of the vocabulary); LoRA and DreamBooth bind a rare existing word. The learning
    rates are the customary ones: one embedding vector takes a large step, a
    low-rank adapter a moderate one, the whole UNet a small one.
    """

    token: str
    learning_rate: float


KIND_DEFAULTS: Mapping[PriorKind, KindDefaults] = {  # token, learning rate
    "textual_inversion": KindDefaults("<sks-person>", 5e-3),
    "lora": KindDefaults("sks", 1e-4),
    "dreambooth": KindDefaults("sks", 5e-6),
}
"""The one table of per-kind defaults (read by :meth:`TrainConfig.for_kind`)."""


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """How to train one prior; :meth:`to_json` is the canonical record of it.

    Build one with :meth:`for_kind` (the per-kind defaults, any field
    overridden); the constructor needs ``kind``, ``token`` and ``learning_rate``.

    ``token`` is the placeholder a textual inversion learns (``"<sks-person>"``,
    new to the vocabulary) or the rare identifier word DreamBooth and LoRA bind
    (``"sks"``). ``instance_prompt`` must contain ``{token}``; by default it is
    ``"a photo of {token}"`` for textual inversion and ``"a photo of {token} <noun>"``
    otherwise, ``<noun>`` being the last word of ``class_prompt``. A textual
    inversion starts from the mean embedding of that noun.

    ``prior_loss_weight``, ``num_class_images`` and ``class_image_steps`` (the
    prior-preservation loss) apply to ``lora`` and ``dreambooth``; ``lora_rank``
    to ``lora`` only; fields that do not apply are left out of :meth:`to_json`,
    so they cannot make two equivalent configurations differ.
    ``checkpoint_every`` 0 writes no checkpoints. Invalid values raise
    :class:`InputError` at construction.
    """

    kind: PriorKind
    token: str
    learning_rate: float
    steps: int = 400
    resolution: int = _TRAINING_SIZE
    batch_size: int = 1
    seed: int = 0
    class_prompt: str = "a photo of a person"
    instance_prompt: str | None = None
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_image_steps: int = 25
    lora_rank: int = 4
    checkpoint_every: int = 100

    @classmethod
    def for_kind(cls, kind: str, **changes: Any) -> TrainConfig:
        """A configuration of ``kind`` with :data:`KIND_DEFAULTS` and the field
        defaults, then ``changes`` (any field, ``token`` and ``learning_rate``
        included) applied; what ``consentry prior train`` builds from its options.

        Raises :class:`InputError` for an unknown kind, an unknown field or a bad value.
        """
        if kind not in KINDS:
            raise InputError(f"unknown prior kind {kind!r}: choose from {', '.join(KINDS)}")
        names = {field.name for field in fields(cls)} - {"kind"}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InputError(f"unknown training setting(s): {', '.join(unknown)}")
        defaults = KIND_DEFAULTS[cast(PriorKind, kind)]
        values: dict[str, Any] = {
            "token": defaults.token,
            "learning_rate": defaults.learning_rate,
            **changes,
        }
        return cls(kind=cast(PriorKind, kind), **values)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown prior kind {self.kind!r}: choose from {', '.join(KINDS)}")
        _check_range("steps", self.steps, 1, 1_000_000)
        if not is_number(self.learning_rate) or not 0.0 < self.learning_rate <= 1.0:
            raise InputError(f"learning_rate must be in (0, 1], not {self.learning_rate!r}")
        _check_range("resolution", self.resolution, 8, 2048)
        if self.resolution % 8:
            raise InputError(f"resolution must be a multiple of 8, not {self.resolution}")
        _check_range("batch_size", self.batch_size, 1, 64)
        _check_range("seed", self.seed, 0, 2**53 - 1)
        _check_range("checkpoint_every", self.checkpoint_every, 0, 1_000_000)
        _check_words("token", self.token, single=True)
        _check_words("class_prompt", self.class_prompt, single=False)
        if self.instance_prompt is not None:
            _check_words("instance_prompt", self.instance_prompt, single=False)
            if "{token}" not in self.instance_prompt:
                raise InputError(
                    f"instance_prompt must contain '{{token}}': {self.instance_prompt!r}"
                )
        if not is_number(self.prior_loss_weight) or not (
            math.isfinite(self.prior_loss_weight) and 0.0 <= self.prior_loss_weight <= 100.0
        ):
            raise InputError(
                f"prior_loss_weight must be from 0 to 100, not {self.prior_loss_weight!r}"
            )
        _check_range("num_class_images", self.num_class_images, 0, 100_000)
        _check_range("class_image_steps", self.class_image_steps, 1, 500)
        _check_range("lora_rank", self.lora_rank, 1, 1024)
        if self.uses_prior_preservation and self.num_class_images < 1:
            raise InputError(
                "prior preservation (prior_loss_weight > 0) needs num_class_images >= 1"
            )

    @property
    def uses_prior_preservation(self) -> bool:
        """True when the prior-preservation loss on class images is part of training."""
        return self.kind != "textual_inversion" and self.prior_loss_weight > 0

    @property
    def prompt(self) -> str:
        """The instance prompt with the token filled in."""
        if self.instance_prompt is not None:
            template = self.instance_prompt
        elif self.kind == "textual_inversion":
            template = "a photo of {token}"
        else:
            template = "a photo of {token} " + self.class_prompt.split()[-1]
        return template.replace("{token}", self.token)

    def to_dict(self) -> dict[str, Any]:
        """The fields that matter for ``kind``, the instance prompt resolved."""
        record: dict[str, Any] = {
            "format": _CONFIG_FORMAT,
            "kind": self.kind,
            "token": self.token,
            "steps": self.steps,
            "learning_rate": float(self.learning_rate),
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "class_prompt": self.class_prompt,
            "instance_prompt": self.prompt,
            "checkpoint_every": self.checkpoint_every,
        }
        if self.kind != "textual_inversion":
            record["prior_loss_weight"] = float(self.prior_loss_weight)
            if self.uses_prior_preservation:
                record["num_class_images"] = self.num_class_images
                record["class_image_steps"] = self.class_image_steps
        if self.kind == "lora":
            record["lora_rank"] = self.lora_rank
        return record

    def to_json(self) -> str:
        """RFC 8785 canonical JSON of :meth:`to_dict` (what the registry records)."""
        return canonical_json(self.to_dict()).decode("utf-8")

    def sha256(self) -> str:
        """SHA-256 of :meth:`to_json`. ``checkpoint_every`` is part of it."""
        return sha256_hex(self.to_json().encode("utf-8"))


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if not is_int(value) or not low <= cast(int, value) <= high:
        raise InputError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def _check_words(name: str, value: object, *, single: bool) -> None:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise InputError(f"{name} must be a non-empty printable string, not {value!r}")
    if len(value) > 300:
        raise InputError(f"{name} is too long ({len(value)} characters, at most 300)")
    if single and any(char.isspace() for char in value):
        raise InputError(f"{name} must be one word without spaces, not {value!r}")
