"""The one set of per-job bounds, shared by the library, the CLI and the HTTP service.

Invariant: every entry point checks a job against the same :class:`Limits` with the
same wording, before anything runs or is logged, so a job one of them refuses,
every one refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consentry.errors import JobLimitError, TooManyImagesError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Per-job limits: images, pixels of the largest image, sampling steps, output
    size and img2img strength, faces, memorization.

    The one source of job bounds: the CLI (``consentry check/generate/restore``),
    the HTTP service and :func:`decide` all use these values and
    :meth:`check_job`'s wording, so a job one of them refuses, every one refuses.
    """

    max_images: int = 8
    max_pixels: int = 16_777_216
    max_steps: int = 50
    min_size: int = 64  # output side, pixels, a multiple of size_multiple
    max_size: int = 1024
    size_multiple: int = 8
    max_faces: int = 32  # per job, inputs and outputs each; checked before embedding
    max_copy_ssim: float = 0.7  # an output this close to a prior's photo is withheld
    max_prompt_chars: int = 2_000  # bounds the alias matcher's work on one prompt

    def check_job(
        self,
        *,
        images: int | None = None,
        steps: int | None = None,
        size: int | None = None,
        strength: float | None = None,
        prompt: str | None = None,
    ) -> None:
        """Raise :class:`~consentry.errors.JobLimitError` (for the images
        :class:`~consentry.errors.TooManyImagesError`) for the first parameter
        outside its bound (None: not part of this job); the message states the bound.
        Checked before anything runs or is logged."""
        if images is not None and not 0 <= images <= self.max_images:
            raise TooManyImagesError(f"{images} images: at most {self.max_images} per job")
        if steps is not None and not 1 <= steps <= self.max_steps:
            raise JobLimitError("steps", f"steps must be 1..{self.max_steps} (got {steps})")
        if size is not None and (
            not self.min_size <= size <= self.max_size or size % self.size_multiple
        ):
            raise JobLimitError(
                "size",
                f"size must be a multiple of {self.size_multiple} in "
                f"{self.min_size}..{self.max_size} (got {size})",
            )
        if strength is not None and not (math.isfinite(strength) and 0.0 < strength <= 1.0):
            raise JobLimitError("strength", f"strength must be in (0, 1] (got {strength})")
        if prompt is not None and len(prompt) > self.max_prompt_chars:
            raise JobLimitError(
                "prompt",
                f"prompt is {len(prompt)} characters: at most {self.max_prompt_chars} per job",
            )
