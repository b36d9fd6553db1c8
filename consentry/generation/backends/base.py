"""What every generation backend shares: the interface, prior references, prior hashing.

A *prior* is a personalised weight file registered for a subject (a textual-
inversion embedding, a LoRA, a DreamBooth UNet) and bound to its bytes by the
SHA-256 recorded in the registry. A backend must never parse a byte of a prior
before that digest matches: :func:`verified_copy` streams the file once,
hashing it while copying it into a private temporary folder, and hands out the
copy only when the digest is the expected one. Loading from the private copy
rather than from the original path closes the window in which the original
could be swapped between the check and the load.
"""

from __future__ import annotations

import hmac
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from consentry.errors import InputError, PriorFileError, PriorHashMismatchError
from consentry.hashing import hash_file, normalise_sha256

if TYPE_CHECKING:
    from PIL import Image


__all__ = [
    "LOADABLE_PRIOR_KINDS",
    "PICKLE_SUFFIXES",
    "Backend",
    "PriorHashMismatchError",
    "PriorRef",
    "check_prior_file",
    "verified_copy",
]

LOADABLE_PRIOR_KINDS: tuple[str, ...] = ("textual_inversion", "lora", "dreambooth")
"""Prior kinds a weight backend can apply (``exemplars`` are photos, not weights)."""

PICKLE_SUFFIXES: frozenset[str] = frozenset({".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"})
"""Suffixes of pickle-based checkpoints, which can run code when loaded: always refused."""


class PriorRef(NamedTuple):
    """A prior to apply for one job: the file, its kind, its registered digest, its token.

    ``token`` is the placeholder a textual inversion binds (``"<sks-person>"``); it
    overrides the token stored in the file and must appear in the prompt. Other
    kinds ignore it.
    """

    path: Path
    kind: str
    sha256: str
    token: str | None = None


@runtime_checkable
class Backend(Protocol):
    """What the generation gateway calls. Every call is independent: a prior given
    to one call never affects another."""

    def text2img(
        self,
        prompt: str,
        steps: int,
        size: int | tuple[int, int],
        seed: int,
        prior: PriorRef | None = None,
    ) -> list[Image.Image]:
        """Images for ``prompt``; ``size`` is a side or ``(width, height)``."""
        ...

    def img2img(
        self,
        image: Image.Image,
        prompt: str,
        strength: float,
        steps: int,
        seed: int,
        prior: PriorRef | None = None,
    ) -> list[Image.Image]:
        """``image`` transformed towards ``prompt``; ``strength`` in (0, 1]."""
        ...


def check_prior_file(
    path: Path | str, kind: str, kinds: Sequence[str] = LOADABLE_PRIOR_KINDS
) -> Path:
    """Refuse, before reading it, a prior that is of the wrong kind, not a file, or
    not ``.safetensors`` (pickle checkpoints are refused by name); return its path."""
    if kind == "exemplars":
        raise InputError(
            "an 'exemplars' prior is a set of reference photos, not weights: "
            "this backend cannot apply it"
        )
    if kind not in kinds:
        raise InputError(f"unknown prior kind {kind!r}: choose from {', '.join(kinds)}")
    prior = Path(path)
    suffix = prior.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise PriorFileError(
            f"prior {prior.name}: {suffix} checkpoints are pickles, which can run code "
            "when loaded; convert it to .safetensors"
        )
    if suffix != ".safetensors":
        raise PriorFileError(f"prior {prior.name}: only .safetensors files are accepted")
    if not prior.is_file():
        raise InputError(f"prior file {prior} does not exist or is not a regular file")
    return prior


@contextmanager
def verified_copy(path: Path, expected_sha256: str) -> Iterator[Path]:
    """Yield a private copy of ``path`` whose SHA-256 is ``expected_sha256``.

    The file is read once, in chunks, into a fresh ``0700`` temporary folder
    while it is hashed; on a mismatch the copy is deleted and
    :class:`PriorHashMismatchError` is raised before anything could parse it.
    The copy (same suffix) is deleted when the block ends. Cost: one extra
    write of the file's size to the temporary folder (``TMPDIR``).
    """
    expected = normalise_sha256(expected_sha256)
    source = Path(path)
    with tempfile.TemporaryDirectory(prefix="consentry-prior-") as folder:
        copy = Path(folder) / f"prior{source.suffix.lower()}"
        try:
            with copy.open("xb") as dst:
                actual = hash_file(source, copy_to=dst).sha256
        except OSError as exc:
            raise InputError(f"cannot read prior file {source}: {exc}") from exc
        if not hmac.compare_digest(actual, expected):
            raise PriorHashMismatchError(source, expected, actual)
        copy.chmod(0o400)
        yield copy
