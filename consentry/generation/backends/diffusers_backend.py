"""Stable Diffusion through ``diffusers``: local models only, hash-checked priors.

Model folders
    :func:`load_pipeline` loads a Stable Diffusion 1.x/2.x folder in the
    ``diffusers`` layout (``model_index.json`` naming ``StableDiffusionPipeline``
    or ``StableDiffusionImg2ImgPipeline``) with ``local_files_only=True`` and
    ``use_safetensors=True``: nothing is fetched from a hub, strings that are not
    existing folders (hub ids) are refused, and pickled ``.bin`` weights are never
    read. Pipelines run where a :class:`~consentry.generation.placement.Placement`
    says (default ``auto``: the first CUDA GPU in float16 if there is one, else
    the CPU in float32) with the progress bar off.

Priors (files, ``.safetensors`` only; ``.bin``/``.ckpt``/``.pt`` are refused)
    ``textual_inversion``
        An embedding as ``load_textual_inversion`` reads it: ``{token: tensor}``
        with a ``(dim,)`` or ``(n_vectors, dim)`` tensor, or A1111's
        ``{"emb_params": tensor}``. The ``token`` argument overrides the file's.
    ``lora``
        A file written by ``StableDiffusionPipeline.save_lora_weights`` (keys
        ``unet.…lora_A/B…`` and optionally ``text_encoder.…``; its
        ``lora_adapter_metadata`` header keeps ``r`` and ``lora_alpha``), loaded
        with ``load_lora_weights``. Kohya-style files (``lora_unet_…``) go through
        diffusers' converter; only the diffusers format is tested here.
    ``dreambooth``
        The complete fine-tuned UNet as one state dict (the keys and shapes of
        ``pipe.unet.state_dict()``, as written by
        ``safetensors.torch.save_file(unet.state_dict(), path)``), loaded with
        ``load_state_dict(strict=True)``. A DreamBooth that also tuned the text
        encoder must ship a full model folder instead, registered as a base model.

    :func:`apply_prior` hashes the file while copying it into a private
    temporary folder and compares the digest before parsing anything (see
    :func:`consentry.generation.backends.base.verified_copy`).

Isolation between jobs
    :class:`DiffusersBackend` keeps one pristine pipeline and never applies a
    prior to it. A job with a prior runs on a job pipeline whose mutated
    components are deep copies (textual inversion: tokenizer and text encoder;
    LoRA: UNet and text encoder; DreamBooth: UNet) and whose other components
    (VAE, safety checker) are shared read-only; every job gets its own scheduler.
    The copies are dropped when the job ends, so a prior cannot leak into a later
    job. Cost per prior job: one copy of those components on the pipeline's
    device (for SD 1.5 in float32 about 3.4 GB for the UNet, 0.5 GB for the text
    encoder; half that in float16 on a GPU) and one
    temporary on-disk copy of the prior file. Unloading instead
    (``unload_lora_weights``, ``unload_textual_inversion``, restoring a saved
    UNet state dict) would be cheaper but leaves correctness to each unloader.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

import safetensors
import safetensors.torch
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
    StableDiffusionImg2ImgPipeline,
)
from PIL import Image

from consentry.errors import InputError
from consentry.generation.backends.base import (
    PriorHashMismatchError,
    PriorRef,
    check_prior_file,
    verified_copy,
)
from consentry.generation.placement import Placement, resolve_placement

__all__ = [
    "LORA_ADAPTER_NAME",
    "MAX_IMAGES",
    "MAX_SIDE",
    "MAX_STEPS",
    "MUTATED_COMPONENTS",
    "DiffusersBackend",
    "PipelineKind",
    "PriorHashMismatchError",
    "SDPipeline",
    "apply_prior",
    "generate",
    "img2img",
    "load_pipeline",
]

PipelineKind = Literal["text2img", "img2img"]
SDPipeline = StableDiffusionPipeline | StableDiffusionImg2ImgPipeline

LORA_ADAPTER_NAME = "consentry_prior"
MAX_STEPS = 500
MAX_SIDE = 2048
MAX_IMAGES = 8

_PIPELINE_CLASSES: dict[str, type[SDPipeline]] = {
    "text2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
}
_ACCEPTED_CLASS_NAMES = frozenset({"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"})

# Components a prior of each kind changes in place; a job pipeline deep-copies them.
MUTATED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "textual_inversion": ("tokenizer", "text_encoder"),
    "lora": ("unet", "text_encoder"),
    "dreambooth": ("unet",),
}


# -- model folders -------------------------------------------------------------


def _model_folder(model_dir: Path | str) -> Path:
    """``model_dir`` as an absolute local model folder, or :class:`InputError`."""
    if not isinstance(model_dir, str | Path) or not str(model_dir).strip():
        raise InputError(f"a model folder path is required, not {model_dir!r}")
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"model {str(model_dir)!r} is not an existing local folder; models are loaded "
            "from local diffusers folders only, never by hub id"
        )
    index = folder / "model_index.json"
    if not index.is_file():
        raise InputError(
            f"model folder {folder} has no model_index.json: it is not a diffusers "
            "pipeline folder (save one with save_pretrained or convert the checkpoint)"
        )
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{index} is not readable JSON: {exc}") from exc
    if class_name not in _ACCEPTED_CLASS_NAMES:
        raise InputError(
            f"model folder {folder} holds a {class_name!r} pipeline; only Stable Diffusion "
            f"({', '.join(sorted(_ACCEPTED_CLASS_NAMES))}) folders are supported"
        )
    return folder.resolve()


@overload
def load_pipeline(
    model_dir: Path | str, kind: Literal["text2img"], placement: Placement | None = None
) -> StableDiffusionPipeline: ...
@overload
def load_pipeline(
    model_dir: Path | str, kind: Literal["img2img"], placement: Placement | None = None
) -> StableDiffusionImg2ImgPipeline: ...
def load_pipeline(
    model_dir: Path | str, kind: PipelineKind, placement: Placement | None = None
) -> SDPipeline:
    """Load a Stable Diffusion pipeline from a local folder onto ``placement``
    (``None``: :func:`~consentry.generation.placement.resolve_placement` defaults),
    with the progress bar off.

    Raises :class:`InputError` for a path that is not an existing folder (a hub
    id, a typo), a folder without ``model_index.json``, a non-Stable-Diffusion
    pipeline, or weights that are missing or only pickled.
    """
    if kind not in _PIPELINE_CLASSES:
        raise InputError(f"unknown pipeline kind {kind!r}: choose text2img or img2img")
    folder = _model_folder(model_dir)
    where = placement if placement is not None else resolve_placement()
    cls = _PIPELINE_CLASSES[kind]
    try:
        pipe = cls.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            dtype=where.dtype,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot load the pipeline in {folder}: {exc}") from exc
    pipe = pipe.to(where.device)
    _quiet(pipe)
    return pipe


def _quiet(pipe: SDPipeline) -> None:
    """Turn the pipeline's denoising progress bar off."""
    pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]


# -- priors --------------------------------------------------------------------


def _safetensors_keys(path: Path, name: str) -> list[str]:
    """The tensor names in a safetensors file, or :class:`InputError` if it is not one."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises several types for a bad header
        raise InputError(f"prior {name} is not a valid safetensors file: {exc}") from exc


def apply_prior(
    pipe: SDPipeline,
    prior_path: Path | str,
    kind: str,
    expected_sha256: str,
    token: str | None = None,
) -> None:
    """Verify a prior file's SHA-256, then load it into ``pipe`` (in place).

    Nothing is read from the file beyond its bytes for hashing until the digest
    matches ``expected_sha256``; a mismatch raises :class:`PriorHashMismatchError`
    and leaves ``pipe`` untouched. A wrong kind, a non-``.safetensors`` file, an
    invalid file or weights that do not fit the model raise :class:`InputError`;
    ``pipe`` may then be partly changed, so apply priors to a copy you can drop
    (as :class:`DiffusersBackend` does).
    """
    path = check_prior_file(prior_path, kind)
    with verified_copy(path, expected_sha256) as private:
        _load_verified_prior(pipe, private, kind, token, path.name)


def _load_verified_prior(
    pipe: SDPipeline, private: Path, kind: str, token: str | None, name: str
) -> None:
    """Load a prior whose private copy has already passed the hash check."""
    keys = _safetensors_keys(private, name)
    if not keys:
        raise InputError(f"prior {name} holds no tensors")
    try:
        if kind == "textual_inversion":
            _load_textual_inversion(pipe, private, keys, token, name)
        elif kind == "lora":
            _load_lora(pipe, private, keys, name)
        else:
            _load_dreambooth(pipe, private, name)
    except InputError:
        raise
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"prior {name} ({kind}) does not fit this model: {exc}") from exc


def _load_textual_inversion(
    pipe: SDPipeline, private: Path, keys: list[str], token: str | None, name: str
) -> None:
    if token is not None and (not token or any(char.isspace() for char in token)):
        raise InputError(f"textual inversion token {token!r} must be non-empty, without spaces")
    if token is None and keys == ["emb_params"]:
        raise InputError(f"prior {name} does not name its token: pass token=...")
    if len(keys) != 1:
        raise InputError(f"prior {name}: a textual inversion holds one tensor, not {len(keys)}")
    bound = token if token is not None else keys[0]
    vocab = pipe.tokenizer.get_vocab()
    if bound in vocab or f"{bound}</w>" in vocab:
        # An added token matches anywhere in a prompt: binding an existing word would
        # silently change the meaning of every prompt that uses it.
        raise InputError(
            f"textual inversion token {bound!r} is already a word of the vocabulary: "
            "choose a new placeholder such as '<name>'"
        )
    pipe.load_textual_inversion(
        str(private),
        token=token,
        use_safetensors=True,
        local_files_only=True,
    )


def _load_lora(pipe: SDPipeline, private: Path, keys: list[str], name: str) -> None:
    if not all("lora" in key for key in keys):
        raise InputError(f"prior {name} is not a LoRA: every tensor name must contain 'lora'")
    pipe.load_lora_weights(
        str(private.parent),
        weight_name=private.name,
        adapter_name=LORA_ADAPTER_NAME,
        use_safetensors=True,
        local_files_only=True,
    )


def _load_dreambooth(pipe: SDPipeline, private: Path, name: str) -> None:
    state = safetensors.torch.load_file(str(private), device="cpu")
    unet = pipe.unet
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"prior {name} is not a UNet state dict for this model: "
            f"{len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    param = next(unet.parameters())
    converted = {key: value.to(param.device, param.dtype) for key, value in state.items()}
    unet.load_state_dict(converted, strict=True)


# -- running -------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InputError(f"seed must be an integer in [0, 2**63), not {seed!r}")
    return torch.Generator(device="cpu").manual_seed(seed)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must be an integer from 1 to {MAX_STEPS}, not {steps!r}")
    return steps


def _check_count(num_images: int) -> int:
    if isinstance(num_images, bool) or not isinstance(num_images, int):
        raise InputError(f"num_images must be an integer, not {num_images!r}")
    if not 1 <= num_images <= MAX_IMAGES:
        raise InputError(f"num_images must be from 1 to {MAX_IMAGES}, not {num_images}")
    return num_images


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        width = height = size
    elif isinstance(size, tuple | list) and len(size) == 2:
        width, height = size
    else:
        raise InputError(f"size must be a side or (width, height), not {size!r}")
    for side in (width, height):
        if isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= MAX_SIDE:
            raise InputError(f"image sides must be integers from 8 to {MAX_SIDE}: {size!r}")
        if side % 8:
            raise InputError(f"image sides must be multiples of 8, not {size!r}")
    return width, height


def _check_guidance(guidance: float) -> float:
    value = float(guidance)
    if not 0.0 <= value <= 50.0:
        raise InputError(f"guidance must be from 0 to 50, not {guidance!r}")
    return value


def _images(output: Any) -> list[Image.Image]:
    images = output.images
    if not isinstance(images, list) or not all(isinstance(im, Image.Image) for im in images):
        raise TypeError("the pipeline did not return PIL images")
    return images


def generate(
    pipe: StableDiffusionPipeline,
    prompt: str,
    *,
    steps: int,
    size: int | tuple[int, int],
    seed: int,
    guidance: float = 7.5,
    negative_prompt: str | None = None,
    num_images: int = 1,
) -> list[Image.Image]:
    """Text to image. ``size`` is a side or ``(width, height)``, multiples of 8.

    The same pipeline, arguments and ``seed`` give the same pixels on the same
    machine and device (a seeded CPU ``torch.Generator`` draws the initial noise
    on every device, so a seed names the same noise everywhere).
    """
    width, height = _check_size(size)
    output = pipe(
        prompt,
        height=height,
        width=width,
        num_inference_steps=_check_steps(steps),
        guidance_scale=_check_guidance(guidance),
        negative_prompt=negative_prompt,
        num_images_per_prompt=_check_count(num_images),
        generator=_generator(seed),
        output_type="pil",
    )
    return _images(output)


def img2img(
    pipe: StableDiffusionImg2ImgPipeline,
    image: Image.Image,
    prompt: str,
    *,
    strength: float,
    steps: int,
    seed: int,
    guidance: float = 7.5,
    negative_prompt: str | None = None,
    num_images: int = 1,
) -> list[Image.Image]:
    """Image to image: ``image`` noised to ``strength`` (0 < strength <= 1), then
    denoised towards ``prompt`` in ``int(steps * strength)`` steps. Deterministic
    per ``seed``. The output has the input's size rounded down to multiples of 8.
    """
    if not isinstance(image, Image.Image):
        raise InputError("img2img needs a PIL image")
    _check_size((image.width - image.width % 8, image.height - image.height % 8))
    value = float(strength)
    if not 0.0 < value <= 1.0:
        raise InputError(f"strength must be in (0, 1], not {strength!r}")
    steps = _check_steps(steps)
    if int(steps * value) < 1:
        raise InputError(f"steps x strength = {steps * value:.2f}: no denoising step would run")
    output = pipe(
        prompt,
        image=image.convert("RGB"),
        strength=value,
        num_inference_steps=steps,
        guidance_scale=_check_guidance(guidance),
        negative_prompt=negative_prompt,
        num_images_per_prompt=_check_count(num_images),
        generator=_generator(seed),
        output_type="pil",
    )
    return _images(output)


# -- the backend ------------------------------------------------------------------


class DiffusersBackend:
    """A local Stable Diffusion model serving text2img and img2img jobs.

    The pipeline is loaded once; each job runs on a job pipeline that shares the
    unchanged components (see the module notes), so a prior given to one call
    never affects another. Jobs run one at a time (a lock), which also bounds
    memory to one set of copied components.
    """

    def __init__(self, model_dir: Path | str, placement: Placement | None = None) -> None:
        self.model_dir = _model_folder(model_dir)
        self.placement = placement if placement is not None else resolve_placement()
        self._base = load_pipeline(self.model_dir, "text2img", self.placement)
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> StableDiffusionPipeline:
        """The pristine pipeline (read it, never change it)."""
        return self._base

    def _components(self, mutated: tuple[str, ...]) -> dict[str, Any]:
        components = dict(self._base.components)
        scheduler = components["scheduler"]
        components["scheduler"] = type(scheduler).from_config(scheduler.config)
        for name in mutated:
            components[name] = copy.deepcopy(components[name])
        return components

    def _new_pipeline(self, kind: PipelineKind, mutated: tuple[str, ...] = ()) -> SDPipeline:
        cls = _PIPELINE_CLASSES[kind]
        requires_checker = bool(self._base.config.get("requires_safety_checker", True))
        pipe = cls(**self._components(mutated), requires_safety_checker=requires_checker)
        _quiet(pipe)
        return pipe

    @contextmanager
    def _job_pipeline(self, kind: PipelineKind, prior: PriorRef | None) -> Iterator[SDPipeline]:
        """A pipeline for one job; the prior's hash is checked before anything is copied."""
        if prior is None:
            yield self._new_pipeline(kind)
            return
        path = check_prior_file(prior.path, prior.kind)
        with verified_copy(path, prior.sha256) as private:
            pipe = self._new_pipeline(kind, MUTATED_COMPONENTS[prior.kind])
            _load_verified_prior(pipe, private, prior.kind, prior.token, path.name)
        yield pipe

    def text2img(
        self,
        prompt: str,
        steps: int,
        size: int | tuple[int, int],
        seed: int,
        prior: PriorRef | None = None,
        *,
        guidance: float = 7.5,
        negative_prompt: str | None = None,
        num_images: int = 1,
    ) -> list[Image.Image]:
        """Text to image, with ``prior`` applied for this call only."""
        with self._lock, self._job_pipeline("text2img", prior) as pipe:
            assert isinstance(pipe, StableDiffusionPipeline)
            return generate(
                pipe,
                prompt,
                steps=steps,
                size=size,
                seed=seed,
                guidance=guidance,
                negative_prompt=negative_prompt,
                num_images=num_images,
            )

    def img2img(
        self,
        image: Image.Image,
        prompt: str,
        strength: float,
        steps: int,
        seed: int,
        prior: PriorRef | None = None,
        *,
        guidance: float = 7.5,
        negative_prompt: str | None = None,
        num_images: int = 1,
    ) -> list[Image.Image]:
        """Image to image, with ``prior`` applied for this call only."""
        with self._lock, self._job_pipeline("img2img", prior) as pipe:
            assert isinstance(pipe, StableDiffusionImg2ImgPipeline)
            return img2img(
                pipe,
                image,
                prompt,
                strength=strength,
                steps=steps,
                seed=seed,
                guidance=guidance,
                negative_prompt=negative_prompt,
                num_images=num_images,
            )
