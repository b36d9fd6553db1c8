"""Where diffusers pipelines and training run: one device and one dtype.

Names accepted (``--device`` on the CLI, ``CONSENTRY_DEVICE`` in the environment)
    ``auto``
        ``cuda:0`` when ``torch.cuda.is_available()``, else ``cpu``. The default.
    ``cpu``
        The CPU.
    ``cuda`` / ``cuda:N``
        A CUDA GPU. Refused with :class:`InputError` (never silently moved to the
        CPU) when this torch build has no CUDA or no such GPU is visible.

Dtypes (``--dtype``, ``CONSENTRY_DTYPE``)
    ``auto``
        ``float16`` for inference on a GPU, ``float32`` otherwise (and always for
        training). The default.
    ``float32``, ``bfloat16``
        Anywhere.
    ``float16``
        GPU only: half precision on the CPU is slow and several of its kernels are
        missing, so it is refused there.

Training keeps every weight in ``float32`` whatever the device (the trainable
parameters, their AdamW moments and the frozen components alike): a dtype other
than ``float32``/``auto`` is refused for training rather than half-applied.

Invariants
    A :class:`Placement` names a device that exists in this process and a dtype
    that device runs; :func:`resolve_placement` is the only way this package
    builds one from user input. Seeded random draws (initial noise, training
    noise, timesteps) are made by CPU generators whatever the placement, so a
    seed selects the same noise on every device; the arithmetic that follows
    differs between devices, so pixels and trained weights are reproducible per
    device, not across devices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from consentry.errors import InputError

__all__ = [
    "DEVICE_ENV",
    "DTYPE_ENV",
    "Placement",
    "Purpose",
    "cpu_placement",
    "resolve_placement",
]

DEVICE_ENV = "CONSENTRY_DEVICE"
DTYPE_ENV = "CONSENTRY_DTYPE"

Purpose = Literal["inference", "training"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class Placement:
    """A device and a dtype that run together (see the module notes)."""

    device: torch.device
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        """True on a CUDA GPU."""
        return self.device.type == "cuda"

    def describe(self) -> str:
        """``"cpu float32"`` or ``"cuda:0 (NVIDIA H200) float16"``: for logs and records."""
        dtype = str(self.dtype).removeprefix("torch.")
        if self.is_cuda:
            return f"{self.device} ({torch.cuda.get_device_name(self.device)}) {dtype}"
        return f"{self.device} {dtype}"


def cpu_placement() -> Placement:
    """The CPU in float32: what every test and the CPU-only install run on."""
    return Placement(torch.device("cpu"), torch.float32)


def _device(name: str) -> torch.device:
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.removeprefix("cuda").removeprefix(":") or "0"
        if not index_text.isdigit():
            raise InputError(f"device {name!r}: a CUDA device is 'cuda' or 'cuda:N'")
        if not torch.cuda.is_available():
            build = torch.version.cuda
            why = "this torch build has no CUDA" if build is None else "no CUDA GPU is visible"
            raise InputError(f"device {name!r} asked for, but {why}", hint="use --device cpu")
        index = int(index_text)
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(f"device {name!r}: only {count} CUDA device(s) are visible")
        return torch.device("cuda", index)
    raise InputError(f"unknown device {name!r}: choose auto, cpu, cuda or cuda:N")


def _dtype(name: str, device: torch.device, purpose: Purpose) -> torch.dtype:
    text = name.strip().lower()
    if text == "auto":
        half = purpose == "inference" and device.type == "cuda"
        return torch.float16 if half else torch.float32
    if text not in _DTYPES:
        raise InputError(f"unknown dtype {name!r}: choose auto, {', '.join(_DTYPES)}")
    dtype = _DTYPES[text]
    if purpose == "training" and dtype != torch.float32:
        raise InputError(f"training keeps its weights in float32; dtype {name!r} is refused")
    if dtype == torch.float16 and device.type == "cpu":
        raise InputError("float16 runs on a GPU only: use float32 or bfloat16 on the CPU")
    return dtype


def resolve_placement(
    device: str | None = None,
    dtype: str | None = None,
    *,
    purpose: Purpose = "inference",
) -> Placement:
    """The placement for ``device`` and ``dtype`` names (``None``: the environment
    variables :data:`DEVICE_ENV` / :data:`DTYPE_ENV`, then ``auto``; training
    ignores :data:`DTYPE_ENV`, which is meant for inference).

    Raises :class:`InputError` for an unknown name, a GPU that is not there, or a
    dtype the device or the purpose cannot use.
    """
    device_name = device if device is not None else os.environ.get(DEVICE_ENV) or "auto"
    dtype_env = os.environ.get(DTYPE_ENV) if purpose == "inference" else None
    dtype_name = dtype if dtype is not None else dtype_env or "auto"
    if not isinstance(device_name, str) or not isinstance(dtype_name, str):
        raise InputError(f"device and dtype are names, not {device!r} / {dtype!r}")
    placed = _device(device_name)
    return Placement(placed, _dtype(dtype_name, placed, purpose))
