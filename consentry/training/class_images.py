"""Class images for prior preservation: made by the base model, cached on disk.

DreamBooth and LoRA with ``prior_loss_weight > 0`` also train on images the
*base* model draws from ``class_prompt`` (``"a photo of a person"``), so the
prior keeps the model's notion of the class while learning the subject.

Invariants
----------
* Class images are synthetic: no subject photo goes into them. They are cached
  as PNG under ``work_dir/class_images/<key>/00000.png, ...``, where ``key`` is
  the first 16 hex digits of the SHA-256 of the canonical JSON of (base model
  folder hash, prompt, resolution, sampling steps, seed): change any of them and
  a new set is made.
* Image ``i`` is drawn from its own generator seeded from SHA-256 of
  ``(seed, i)``, so a set is the same however many images were cached before.
* Each image is written with :func:`consentry.fsutil.atomic_output` (whole or
  absent); a cached file that is missing, too large, not a PNG or of the wrong
  size or mode is made again, never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from PIL import Image

from consentry.fsutil import atomic_output
from consentry.registry.signing import canonical_json
from consentry.training.config import TrainConfig

__all__ = ["CLASS_IMAGES_DIR", "class_images"]

CLASS_IMAGES_DIR = "class_images"


def _class_image_seed(seed: int, index: int) -> int:
    material = f"consentry-class-image/1:{seed}:{index}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:7], "big")


def class_images(
    pipe: StableDiffusionPipeline, config: TrainConfig, work_dir: Path, base_sha256: str
) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    """Class images from the base model, generated once and cached as PNG."""
    key_record = {
        "base_model_sha256": base_sha256,
        "class_prompt": config.class_prompt,
        "resolution": config.resolution,
        "steps": config.class_image_steps,
        "seed": config.seed,
    }
    key = hashlib.sha256(canonical_json(key_record)).hexdigest()[:16]
    folder = work_dir / CLASS_IMAGES_DIR / key
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(config.num_class_images):
        path = folder / f"{index:05d}.png"
        cached = _read_class_image(path, config.resolution)
        if cached is None:
            generator = torch.Generator(device="cpu").manual_seed(
                _class_image_seed(config.seed, index)
            )
            with torch.no_grad():
                output = pipe(
                    config.class_prompt,
                    height=config.resolution,
                    width=config.resolution,
                    num_inference_steps=config.class_image_steps,
                    generator=generator,
                    output_type="pil",
                )
            image = output.images[0].convert("RGB")
            with atomic_output(path) as staged:
                image.save(staged, format="PNG")
            cached = np.asarray(image, dtype=np.uint8)
        images.append(cached)
    return images


def _read_class_image(path: Path, resolution: int) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
    """A cached class image, or None if it is missing or not what we wrote."""
    if not path.is_file() or path.stat().st_size > 64 * resolution * resolution + 4096:
        return None
    try:
        with Image.open(path, formats=["PNG"]) as image:
            if image.size != (resolution, resolution) or image.mode != "RGB":
                return None
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
