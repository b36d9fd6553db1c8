"""Training personalised priors: textual inversion, DreamBooth-LoRA, full DreamBooth.

:func:`train_prior` fine-tunes a local Stable Diffusion folder (the layout
:func:`consentry.generation.backends.diffusers_backend.load_pipeline` reads) on a
subject's photos and writes one ``.safetensors`` file in the format
:func:`~consentry.generation.backends.diffusers_backend.apply_prior` loads:

``textual_inversion``
    ``{token: tensor(dim)}``: one learned vector for a new placeholder token
    (``"<sks-person>"``), which must not already be a word of the vocabulary.
    Only that vector is trained; the token's row is injected into the text
    encoder's input embeddings by a forward hook, so every other weight (and
    every other embedding row) stays bit-for-bit the base model's.
``lora``
    DreamBooth-LoRA on the UNet's attention projections (``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``), written by ``StableDiffusionPipeline.save_lora_weights``
    from ``get_peft_model_state_dict`` (keys ``unet.…lora_A/B.weight``), with the
    adapter's ``LoraConfig`` in the ``lora_adapter_metadata`` header
    (``target_modules`` sorted, so the bytes do not depend on hash seeds).
``dreambooth``
    The whole fine-tuned UNet as one state dict (``save_file(unet.state_dict())``).

Loss: the standard noise-prediction MSE in latent space (the model's VAE, a
``DDPMScheduler`` built from the model's scheduler config, ``epsilon`` or
``v_prediction`` targets), plus, for ``lora`` and ``dreambooth`` with
``prior_loss_weight > 0``, the prior-preservation term on *class images* that the
base model generates from ``class_prompt``. Optimiser: AdamW (weight decay
1e-2), constant learning rate, gradient norm clipped to 1.

Photos never touch the disk
    The subject's photos are decrypted enrollment photos. They are decoded,
    cropped, resized and VAE-encoded in memory; nothing derived from their pixels
    is written except the trained weights themselves (and, in checkpoint
    metadata, a SHA-256 over the preprocessed pixels, used to refuse a resume
    with other photos). Class images are synthetic (made by the base model from
    ``class_prompt``) and are cached as PNG under ``work_dir/class_images/<key>/``,
    where ``key`` hashes the base model, prompt, size, steps and seed.

Checkpoints and resuming
    Every ``checkpoint_every`` steps the trainable weights, the AdamW state and
    the training RNG state are written as ``work_dir/checkpoint-N/state.safetensors``
    with a ``meta.json`` (step, last loss, config / base model / photos hashes and
    the state file's SHA-256), first into a temporary folder that is then renamed
    into place, so a crash leaves either a whole checkpoint or none. No pickle is
    written or read. The two newest checkpoints are kept. ``resume=True``
    continues from the newest one and refuses (:class:`InputError`) if the
    configuration, the base model folder or the photos differ, or if the state
    file is not the one its metadata names. Every random draw of a step (photo
    choice, latent sample, noise, timesteps) comes from one seeded
    ``torch.Generator`` whose state is checkpointed, so on one machine with the
    same torch version and thread count a resumed run ends with weights
    bit-identical to an uninterrupted one.

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

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

from consentry.errors import EngineError, ImageError, InputError
from consentry.fsutil import fsync_dir
from consentry.generation.backends.diffusers_backend import load_pipeline
from consentry.generation.placement import Placement, resolve_placement
from consentry.registry.signing import canonical_json

__all__ = [
    "CHECKPOINT_PREFIX",
    "CLASS_IMAGES_DIR",
    "PRIOR_FILE_NAMES",
    "Photo",
    "PriorKind",
    "ProgressCallback",
    "TrainConfig",
    "TrainResult",
    "model_folder_sha256",
    "train_prior",
]

PriorKind = Literal["textual_inversion", "lora", "dreambooth"]
"""The kinds of prior this module trains (the registry's names)."""

Photo = np.ndarray[Any, Any] | Image.Image
"""A subject photo in memory: a PIL image, or an ``(H, W, 3)`` ``uint8`` RGB array."""

ProgressCallback = Callable[[int, int, float], None]
"""Called after every step as ``progress(step, total_steps, loss)``."""

CHECKPOINT_PREFIX = "checkpoint-"
CLASS_IMAGES_DIR = "class_images"
PRIOR_FILE_NAMES: dict[str, str] = {
    "textual_inversion": "textual_inversion.safetensors",
    "lora": "lora.safetensors",
    "dreambooth": "dreambooth.safetensors",
}
"""The file each kind writes in ``work_dir``."""

_KINDS: tuple[str, ...] = get_args(PriorKind)
_CONFIG_FORMAT = "consentry-train-config/1"
_CHECKPOINT_FORMAT = "consentry-train-checkpoint/1"
_MODEL_HASH_FORMAT = b"consentry-model-folder/1\n"
_KEEP_CHECKPOINTS = 2
_MAX_PHOTOS = 1000
_MAX_PHOTO_PIXELS = 64_000_000
_LORA_TARGETS = ("to_k", "to_out.0", "to_q", "to_v")
_WEIGHT_DECAY = 1e-2
_MAX_GRAD_NORM = 1.0
_ENCODE_BATCH = 8
_CHUNK = 1 << 20


# -- configuration ------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """How to train one prior; :meth:`to_json` is the canonical record of it.

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
    steps: int = 400
    learning_rate: float = 5e-6
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    class_prompt: str = "a photo of a person"
    instance_prompt: str | None = None
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_image_steps: int = 25
    lora_rank: int = 4
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"unknown prior kind {self.kind!r}: choose from {', '.join(_KINDS)}")
        _check_range("steps", self.steps, 1, 1_000_000)
        if not _is_number(self.learning_rate) or not 0.0 < self.learning_rate <= 1.0:
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
        if not _is_number(self.prior_loss_weight) or not (
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
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if not _is_int(value) or not low <= cast(int, value) <= high:
        raise InputError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def _check_words(name: str, value: object, *, single: bool) -> None:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise InputError(f"{name} must be a non-empty printable string, not {value!r}")
    if len(value) > 300:
        raise InputError(f"{name} is too long ({len(value)} characters, at most 300)")
    if single and any(char.isspace() for char in value):
        raise InputError(f"{name} must be one word without spaces, not {value!r}")


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


# -- hashing ------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_folder_sha256(model_dir: Path | str) -> str:
    """A stable SHA-256 over every regular file in a model folder.

    The digest covers each file's path relative to the folder (POSIX, sorted by
    its UTF-8 bytes) and the SHA-256 of its content, so renaming, adding,
    removing or changing any file changes it; timestamps and permissions do not.
    Symbolic links are followed. Cost: one read of every byte (SD 1.5: ~4 GB).
    Raises :class:`InputError` if ``model_dir`` is not a folder or holds no files.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist or is not a folder")
    files = sorted(
        (path.relative_to(folder).as_posix().encode("utf-8"), path)
        for path in folder.rglob("*")
        if path.is_file()
    )
    if not files:
        raise InputError(f"model folder {folder} holds no files")
    digest = hashlib.sha256(_MODEL_HASH_FORMAT)
    for name, path in files:
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(bytes.fromhex(_sha256_file(path)))
    return digest.hexdigest()


# -- photos -------------------------------------------------------------------------


def _photo_image(photo: Photo, index: int) -> Image.Image:
    if isinstance(photo, Image.Image):
        if photo.width * photo.height > _MAX_PHOTO_PIXELS:
            raise ImageError(f"photo {index} has too many pixels ({photo.width}x{photo.height})")
        return photo.convert("RGB")
    if isinstance(photo, np.ndarray):
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise ImageError(
                f"photo {index} must be an (H, W, 3) uint8 RGB array, "
                f"not {photo.dtype} {photo.shape}"
            )
        if photo.shape[0] * photo.shape[1] > _MAX_PHOTO_PIXELS:
            raise ImageError(f"photo {index} has too many pixels {photo.shape[:2]}")
        return Image.fromarray(np.ascontiguousarray(photo), mode="RGB")
    raise ImageError(f"photo {index} is a {type(photo).__name__}, not a PIL image or array")


def _square(image: Image.Image, resolution: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Centre-crop to a square and resize to ``resolution`` (LANCZOS), as uint8 RGB."""
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def _prepare_photos(
    photos: Sequence[Photo], resolution: int
) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    if isinstance(photos, str | bytes | np.ndarray | Image.Image) or not isinstance(
        photos, Sequence
    ):
        raise InputError("photos must be a list of in-memory images")
    if not photos:
        raise InputError("no photos: a prior needs at least one photo of the subject")
    if len(photos) > _MAX_PHOTOS:
        raise InputError(f"too many photos ({len(photos)}, at most {_MAX_PHOTOS})")
    prepared = []
    for index, photo in enumerate(photos):
        image = _photo_image(photo, index)
        if min(image.size) < resolution:
            raise ImageError(
                f"photo {index} is {image.width}x{image.height}: its shorter side must be at "
                f"least the training resolution {resolution} (photos are never upscaled)"
            )
        prepared.append(_square(image, resolution))
    return prepared


def _pixels_sha256(arrays: Sequence[np.ndarray[Any, np.dtype[np.uint8]]]) -> str:
    digest = hashlib.sha256(b"consentry-train-photos/1\n")
    for array in arrays:
        digest.update(len(array.tobytes()).to_bytes(8, "big"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def _to_tensor(arrays: Sequence[np.ndarray[Any, np.dtype[np.uint8]]]) -> torch.Tensor:
    stacked = np.stack(arrays).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


# -- files --------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with path.open("rb") as stream:
        os.fsync(stream.fileno())


@contextmanager
def _staging(work_dir: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder in ``work_dir``, removed afterwards unless renamed away."""
    folder = Path(tempfile.mkdtemp(prefix=f".{prefix}", suffix=".tmp", dir=work_dir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors header so its ``__metadata__`` entries are in key order.

    safetensors 0.8 writes ``__metadata__`` from a hash map, so a file with two
    or more metadata entries (``save_lora_weights`` writes ``format`` and
    ``lora_adapter_metadata``) gets a different byte order, hence a different
    SHA-256, on every save of the same weights. Sorting them makes the file a
    function of its content; tensor entries and data are left as written (their
    order is already deterministic) and the header stays 8-byte aligned.
    """
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or len(metadata) < 2:
        return
    header["__metadata__"] = dict(sorted(metadata.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


def _publish_file(staged: Path, target: Path) -> None:
    _fsync_file(staged)
    os.replace(staged, target)
    fsync_dir(target.parent)


# -- class images --------------------------------------------------------------------


def _class_image_seed(seed: int, index: int) -> int:
    material = f"consentry-class-image/1:{seed}:{index}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:7], "big")


def _class_images(
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
            with _staging(folder, "class-") as staging:
                staged = staging / path.name
                image.save(staged, format="PNG")
                _publish_file(staged, path)
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


# -- the model ------------------------------------------------------------------------


@dataclass
class _Latents:
    """Per-image latent distributions (mean, std), already scaled for the UNet."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw latents for ``indices``; the noise comes from the CPU ``generator``."""
        mean = self.mean[indices.to(self.mean.device)]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + self.std[indices.to(self.std.device)] * noise.to(mean.device)


@torch.no_grad()
def _encode(pipe: StableDiffusionPipeline, arrays: Sequence[np.ndarray[Any, Any]]) -> _Latents:
    vae = pipe.vae
    scale = float(vae.config.scaling_factor)
    shift = vae.config.get("shift_factor")
    means, stds = [], []
    for start in range(0, len(arrays), _ENCODE_BATCH):
        pixels = _to_tensor(arrays[start : start + _ENCODE_BATCH]).to(vae.device, vae.dtype)
        distribution = vae.encode(pixels).latent_dist
        mean = distribution.mean
        if shift is not None:
            mean = mean - float(shift)
        means.append(mean * scale)
        stds.append(distribution.std * scale)
    return _Latents(torch.cat(means), torch.cat(stds))


def _token_ids(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    """The prompt's padded token ids, on the text encoder's device."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return cast(torch.Tensor, ids).to(pipe.text_encoder.device)


@torch.no_grad()
def _text_states(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    return cast(torch.Tensor, pipe.text_encoder(_token_ids(pipe, prompt))[0])


class _Trainer:
    """The trainable part of one kind: parameters, conditioning, the output file."""

    def __init__(self, pipe: StableDiffusionPipeline, config: TrainConfig) -> None:
        self.pipe = pipe
        self.config = config
        self.params: dict[str, torch.nn.Parameter] = {}
        self._hook: Any = None
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
            module.eval()
        if config.kind == "textual_inversion":
            self._setup_textual_inversion()
        elif config.kind == "lora":
            self._setup_lora()
        else:
            pipe.unet.requires_grad_(True)
            pipe.unet.train()
            self.params = dict(pipe.unet.named_parameters())
        if config.kind != "textual_inversion":
            self.instance_states = _text_states(pipe, config.prompt)
            self.class_states = _text_states(pipe, config.class_prompt)

    # textual inversion: a forward hook swaps the token's embedding for the vector
    def _setup_textual_inversion(self) -> None:
        pipe, token = self.pipe, self.config.token
        tokenizer = pipe.tokenizer
        vocab = tokenizer.get_vocab()
        if token in vocab or f"{token}</w>" in vocab:
            raise InputError(
                f"textual inversion token {token!r} is already a word of the vocabulary: "
                "choose a new placeholder such as '<name>'"
            )
        noun = self.config.class_prompt.split()[-1]
        noun_ids = tokenizer(noun, add_special_tokens=False).input_ids
        if not noun_ids:
            raise InputError(f"the class noun {noun!r} has no tokens to start from")
        if tokenizer.add_tokens([token]) != 1:
            raise InputError(f"cannot add the token {token!r} to the tokenizer")
        token_id = tokenizer.convert_tokens_to_ids(token)
        if tokenizer(token, add_special_tokens=False).input_ids != [token_id]:
            raise InputError(f"the token {token!r} does not tokenize to one new token")
        self.input_ids = _token_ids(pipe, self.config.prompt)
        if token_id not in self.input_ids[0].tolist():
            raise InputError(f"the instance prompt {self.config.prompt!r} loses the token")
        encoder = pipe.text_encoder
        with torch.random.fork_rng(devices=[]):  # resizing draws the new row at random
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = encoder.get_input_embeddings()
        with torch.no_grad():
            start = embeddings.weight[noun_ids].mean(dim=0)
            embeddings.weight[token_id] = start
        vector = torch.nn.Parameter(start.clone())
        self.params = {"embedding": vector}

        def swap(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> Any:
            mask = (args[0] == token_id).unsqueeze(-1)
            return torch.where(mask, vector.to(output.dtype).expand_as(output), output)

        self._hook = embeddings.register_forward_hook(swap)

    def _lora_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_rank,
            lora_dropout=0.0,
            init_lora_weights="gaussian",
            target_modules=list(_LORA_TARGETS),
        )

    def _setup_lora(self) -> None:
        unet = self.pipe.unet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            unet.add_adapter(self._lora_config())
        unet.train()
        self.params = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        if not self.params or not all("lora" in name for name in self.params):
            raise EngineError("the LoRA adapter did not attach to the UNet's attention layers")

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def conditioning(self, batch: int, with_class: bool) -> torch.Tensor:
        if self.config.kind == "textual_inversion":
            states = self.pipe.text_encoder(self.input_ids)[0]
            return cast(torch.Tensor, states.expand(batch, -1, -1))
        parts = [self.instance_states.expand(batch, -1, -1)]
        if with_class:
            parts.append(self.class_states.expand(batch, -1, -1))
        return torch.cat(parts)

    def save(self, path: Path) -> None:
        """Write the prior to ``path`` (a staging location)."""
        if self.config.kind == "textual_inversion":
            vector = self.params["embedding"].detach().to("cpu", torch.float32).clone()
            safetensors.torch.save_file({self.config.token: vector}, str(path))
        elif self.config.kind == "dreambooth":
            state = self.pipe.unet.state_dict()
            safetensors.torch.save_file(_cpu_tensors(state), str(path))
        else:
            metadata = self._lora_config().to_dict()  # type: ignore[no-untyped-call]
            metadata["target_modules"] = sorted(metadata["target_modules"])
            layers: dict[str, torch.nn.Module | torch.Tensor] = dict(
                _cpu_tensors(get_peft_model_state_dict(self.pipe.unet))
            )
            StableDiffusionPipeline.save_lora_weights(
                path.parent,
                unet_lora_layers=layers,
                weight_name=path.name,
                unet_lora_adapter_metadata=metadata,
            )


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: what files are written from, on any device."""
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


# -- checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checkpoint:
    step: int
    loss: float
    folder: Path


def _checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in work_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def _meta(config: TrainConfig, base_sha256: str, photos_sha256: str) -> dict[str, Any]:
    return {
        "format": _CHECKPOINT_FORMAT,
        "config_sha256": config.sha256(),
        "base_model_sha256": base_sha256,
        "photos_sha256": photos_sha256,
    }


def _write_checkpoint(
    work_dir: Path,
    step: int,
    loss: float,
    trainer: _Trainer,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    identity: dict[str, Any],
) -> None:
    tensors = _cpu_tensors({f"param.{name}": p for name, p in trainer.params.items()})
    names = list(trainer.params)
    state = optimizer.state_dict()["state"]
    for index, entry in state.items():
        for key, value in entry.items():
            moment = torch.as_tensor(value).detach()
            tensors[f"optim.{names[index]}.{key}"] = moment.cpu().contiguous()
    tensors["rng.generator"] = generator.get_state()
    target = work_dir / f"{CHECKPOINT_PREFIX}{step}"
    with _staging(work_dir, f"{CHECKPOINT_PREFIX}{step}-") as staging:
        state_path = staging / "state.safetensors"
        safetensors.torch.save_file(tensors, str(state_path))
        _fsync_file(state_path)
        meta = {**identity, "step": step, "loss": loss, "state_sha256": _sha256_file(state_path)}
        meta_path = staging / "meta.json"
        meta_path.write_text(json.dumps(meta, sort_keys=True, indent=1), encoding="utf-8")
        _fsync_file(meta_path)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    fsync_dir(work_dir)
    for _, old in _checkpoints(work_dir)[:-_KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"checkpoint {folder} has no readable meta.json: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != _CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {folder} is not a {_CHECKPOINT_FORMAT} checkpoint")
    return meta


def _check_resumable(folder: Path, identity: dict[str, Any]) -> _Checkpoint:
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
    if not _is_int(step) or not _is_number(loss):
        raise InputError(f"checkpoint {folder} has a malformed meta.json")
    state_path = folder / "state.safetensors"
    if not state_path.is_file() or _sha256_file(state_path) != meta.get("state_sha256"):
        raise InputError(
            f"checkpoint {folder}: state.safetensors is not the one its meta.json names "
            "(damaged or replaced)"
        )
    return _Checkpoint(cast(int, step), float(cast(float, loss)), folder)


def _load_checkpoint(
    checkpoint: _Checkpoint,
    trainer: _Trainer,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
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


# -- training ---------------------------------------------------------------------------


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
    if not resume and _checkpoints(folder):
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
    arrays = _prepare_photos(photos, config.resolution)
    folder = _prepare_work_dir(work_dir, resume)
    base_sha256 = model_folder_sha256(model_dir)
    identity = _meta(config, base_sha256, _pixels_sha256(arrays))
    checkpoint = None
    if resume and (found := _checkpoints(folder)):
        checkpoint = _check_resumable(found[-1][1], identity)
        if checkpoint.step > config.steps:
            raise InputError(f"checkpoint {checkpoint.folder} is past the {config.steps} steps")

    pipe = load_pipeline(model_dir, "text2img", placement)
    class_arrays = (
        _class_images(pipe, config, folder, base_sha256) if config.uses_prior_preservation else []
    )
    instance_latents = _encode(pipe, arrays)
    class_latents = _encode(pipe, class_arrays) if class_arrays else None
    del arrays
    scheduler = _noise_scheduler(pipe)
    trainer = _Trainer(pipe, config)
    try:
        return _run(
            trainer, scheduler, instance_latents, class_latents, folder, identity,
            checkpoint, progress, placement,
        )  # fmt: skip
    finally:
        trainer.close()


def _run(
    trainer: _Trainer,
    scheduler: DDPMScheduler,
    instance: _Latents,
    classes: _Latents | None,
    work_dir: Path,
    identity: dict[str, Any],
    checkpoint: _Checkpoint | None,
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
        _load_checkpoint(checkpoint, trainer, optimizer, generator)
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
            _write_checkpoint(work_dir, step, loss_value, trainer, optimizer, generator, identity)
        if progress is not None:
            progress(step, config.steps, loss_value)
    train_seconds = time.perf_counter() - started
    target_path = work_dir / PRIOR_FILE_NAMES[config.kind]
    with _staging(work_dir, "prior-") as staging:
        staged = staging / target_path.name
        trainer.save(staged)
        _sort_safetensors_metadata(staged)
        _publish_file(staged, target_path)
    return TrainResult(
        path=target_path,
        sha256=_sha256_file(target_path),
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
