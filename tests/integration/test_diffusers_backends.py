"""The diffusers backend end to end on the tiny Stable Diffusion pipeline.

The pipeline is built once per session from configs (random weights, seed 0)
into a temporary folder and loaded back from there; priors are real files in
the formats the backend accepts: a textual-inversion embedding, a LoRA saved by
``save_lora_weights`` (UNet and text encoder, with its adapter metadata), and a
DreamBooth UNet state dict. Each prior must change the output, and the next call
without it must give the baseline pixels again (no leak between jobs).

Nothing may reach the network: ``HF_HUB_OFFLINE=1`` is set before diffusers is
imported and every socket connection fails for the whole module. Torch runs on
one thread, so that two xdist workers on two cores do not oversubscribe.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import hashlib
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
    StableDiffusionImg2ImgPipeline,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file, save_file

from consentry.errors import InputError
from consentry.generation.backends import PriorHashMismatchError, PriorRef
from consentry.generation.backends import diffusers_backend as db
from consentry.generation.placement import resolve_placement
from consentry.generation.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline
from tests.integration._offline import offline_single_thread  # noqa: F401  (autouse)

PROMPT = "a photo of <sks-person> smiling"
PLAIN = "a portrait photo of a person"
STEPS = 10
SIZE = TINY_IMAGE_SIZE


# -- isolation ------------------------------------------------------------------------


# -- the model and the priors ---------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:  # offline: autouse
    started = time.perf_counter()
    folder = build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    assert time.perf_counter() - started < 30
    return folder


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> db.DiffusersBackend:
    return db.DiffusersBackend(model_dir)


@pytest.fixture(scope="module")
def priors(
    tmp_path_factory: pytest.TempPathFactory, backend: db.DiffusersBackend
) -> dict[str, PriorRef]:
    folder = tmp_path_factory.mktemp("priors")
    pipe = backend.pipeline
    files = {
        "textual_inversion": make_textual_inversion(folder / "ti.safetensors", "<sks-person>"),
        "lora": make_lora(folder / "lora", pipe.unet, pipe.text_encoder),
        "dreambooth": make_dreambooth(folder / "dreambooth.safetensors", pipe.unet),
    }
    return {
        kind: PriorRef(
            path, kind, sha(path), "<sks-person>" if kind == "textual_inversion" else None
        )
        for kind, path in files.items()
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_textual_inversion(path: Path, token: str, seed: int = 1) -> Path:
    """A one-vector embedding in diffusers' format: ``{token: tensor(dim)}``."""
    generator = torch.Generator().manual_seed(seed)
    save_file({token: torch.randn(32, generator=generator)}, str(path))
    return path


def make_lora(folder: Path, unet: Any, text_encoder: Any, seed: int = 2) -> Path:
    """A rank-4 LoRA on the UNet attention and the text encoder, saved by diffusers.

    peft initialises ``lora_B`` to zero (a no-op adapter); random ``lora_B``
    stands in for training. ``lora_alpha`` 8 with ``r`` 4 (scale 2) is kept in
    the file's adapter metadata.
    """
    generator = torch.Generator().manual_seed(seed)
    unet = copy.deepcopy(unet)
    text_encoder = copy.deepcopy(text_encoder)
    unet_config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    text_config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]
    )
    unet.add_adapter(unet_config)
    text_encoder.add_adapter(text_config)
    with torch.no_grad():
        for model in (unet, text_encoder):
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(text_encoder),
        weight_name="pytorch_lora_weights.safetensors",
        unet_lora_adapter_metadata=unet_config.to_dict(),  # type: ignore[no-untyped-call]
        text_encoder_lora_adapter_metadata=text_config.to_dict(),  # type: ignore[no-untyped-call]
    )
    return folder / "pytorch_lora_weights.safetensors"


def make_dreambooth(path: Path, unet: Any, seed: int = 3) -> Path:
    """A 'fine-tuned' UNet: every tensor of the base nudged by seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        key: value + 0.05 * torch.randn(value.shape, generator=generator)
        for key, value in unet.state_dict().items()
    }
    save_file(state, str(path))
    return path


def pixels(images: list[Image.Image]) -> np.ndarray:
    assert len(images) == 1
    image = images[0]
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.float64)


def differs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference (0-255 scale)."""
    return float(np.abs(a - b).mean())


def fingerprint(pipe: Any) -> dict[str, Any]:
    return {
        "vocab": len(pipe.tokenizer),
        "unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
        "text": {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()},
    }


def assert_pristine(backend: db.DiffusersBackend, before: dict[str, Any]) -> None:
    after = fingerprint(backend.pipeline)
    assert after["vocab"] == before["vocab"]
    for part in ("unet", "text"):
        assert after[part].keys() == before[part].keys()
        assert all(torch.equal(after[part][k], v) for k, v in before[part].items())
    assert not any("lora" in name for name, _ in backend.pipeline.unet.named_parameters())
    assert not any("lora" in name for name, _ in backend.pipeline.text_encoder.named_parameters())


@pytest.fixture(scope="module")
def baseline(backend: db.DiffusersBackend) -> dict[str, np.ndarray]:
    return {prompt: pixels(backend.text2img(prompt, STEPS, SIZE, 0)) for prompt in (PROMPT, PLAIN)}


# -- the tiny model -----------------------------------------------------------------


def test_tiny_build_is_a_safetensors_model_folder_and_reproducible(
    tmp_path: Path, model_dir: Path
) -> None:
    assert (model_dir / "model_index.json").is_file()
    files = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*") if p.is_file())
    assert not [p for p in files if p.suffix in {".bin", ".ckpt", ".pt", ".pkl"}]
    assert Path("unet/diffusion_pytorch_model.safetensors") in files
    assert not (model_dir / "safety_checker").exists()
    again = build_tiny_pipeline(tmp_path / "again", seed=0)
    for name in files:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    weights = Path("unet/diffusion_pytorch_model.safetensors")
    assert (other / weights).read_bytes() != (model_dir / weights).read_bytes()


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("text2img", StableDiffusionPipeline), ("img2img", StableDiffusionImg2ImgPipeline)],
)
def test_load_pipeline_from_the_folder(model_dir: Path, kind: db.PipelineKind, cls: type) -> None:
    pipe = db.load_pipeline(model_dir, kind)
    assert type(pipe) is cls
    assert pipe.device.type == "cpu"
    assert pipe.unet.dtype == torch.float32
    assert pipe.safety_checker is None
    assert pipe._progress_bar_config == {"disable": True}
    words = ["a", "portrait", "photo", "of", "a", "person", "smiling"]
    assert pipe.tokenizer.tokenize(" ".join(words)) == [f"{word}</w>" for word in words]


def test_pickled_weights_in_a_model_folder_are_never_unpickled(
    tmp_path: Path, model_dir: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (Path.touch, (marker,))

    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputError, match="cannot load the pipeline"):
        db.load_pipeline(folder, "text2img")
    assert not marker.exists()


# -- generation -------------------------------------------------------------------------


def test_text2img_is_deterministic_per_seed(
    backend: db.DiffusersBackend, baseline: dict[str, np.ndarray]
) -> None:
    first = baseline[PLAIN]
    assert first.shape == (SIZE, SIZE, 3)
    assert first.std() > 1.0  # not a flat image
    assert np.array_equal(pixels(backend.text2img(PLAIN, STEPS, SIZE, 0)), first)
    assert differs(pixels(backend.text2img(PLAIN, STEPS, SIZE, 1)), first) > 1.0
    assert differs(pixels(backend.text2img("a painting of a dog", STEPS, SIZE, 0)), first) > 0.5


def test_generate_function_sizes_and_batches(backend: db.DiffusersBackend) -> None:
    pipe = db.load_pipeline(backend.model_dir, "text2img")
    images = db.generate(pipe, PLAIN, steps=2, size=(64, 32), seed=5, guidance=1.0, num_images=2)
    assert [image.size for image in images] == [(64, 32), (64, 32)]
    again = db.generate(pipe, PLAIN, steps=2, size=(64, 32), seed=5, guidance=1.0, num_images=2)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True)
    )


def test_img2img_works_and_is_deterministic(
    backend: db.DiffusersBackend, baseline: dict[str, np.ndarray]
) -> None:
    source = Image.fromarray(baseline[PLAIN].astype(np.uint8))
    out = pixels(backend.img2img(source, "a watercolor painting", 0.6, STEPS, 0))
    assert out.shape == (SIZE, SIZE, 3)
    assert differs(out, baseline[PLAIN]) > 0.5
    again = pixels(backend.img2img(source, "a watercolor painting", 0.6, STEPS, 0))
    assert np.array_equal(out, again)
    pipe = db.load_pipeline(backend.model_dir, "img2img")
    direct = db.img2img(pipe, source, "a watercolor painting", strength=0.6, steps=STEPS, seed=0)
    assert np.array_equal(pixels(direct), out)


# -- priors ------------------------------------------------------------------------------


def test_textual_inversion_changes_the_output_without_leaking(
    backend: db.DiffusersBackend, baseline: dict[str, np.ndarray], priors: dict[str, PriorRef]
) -> None:
    before = fingerprint(backend.pipeline)
    with_ti = pixels(backend.text2img(PROMPT, STEPS, SIZE, 0, priors["textual_inversion"]))
    assert differs(with_ti, baseline[PROMPT]) > 0.5
    assert np.array_equal(
        pixels(backend.text2img(PROMPT, STEPS, SIZE, 0, priors["textual_inversion"])), with_ti
    )
    assert np.array_equal(pixels(backend.text2img(PROMPT, STEPS, SIZE, 0)), baseline[PROMPT])
    assert_pristine(backend, before)
    assert "<sks-person>" not in backend.pipeline.tokenizer.get_vocab()


def test_lora_changes_the_output_without_leaking(
    backend: db.DiffusersBackend, baseline: dict[str, np.ndarray], priors: dict[str, PriorRef]
) -> None:
    before = fingerprint(backend.pipeline)
    with_lora = pixels(backend.text2img(PLAIN, STEPS, SIZE, 0, priors["lora"]))
    assert differs(with_lora, baseline[PLAIN]) > 1.0
    assert np.array_equal(pixels(backend.text2img(PLAIN, STEPS, SIZE, 0)), baseline[PLAIN])
    assert_pristine(backend, before)


def test_dreambooth_unet_changes_the_output_without_leaking(
    backend: db.DiffusersBackend, baseline: dict[str, np.ndarray], priors: dict[str, PriorRef]
) -> None:
    before = fingerprint(backend.pipeline)
    tuned = pixels(backend.text2img(PLAIN, STEPS, SIZE, 0, priors["dreambooth"]))
    assert differs(tuned, baseline[PLAIN]) > 1.0
    assert np.array_equal(pixels(backend.text2img(PLAIN, STEPS, SIZE, 0)), baseline[PLAIN])
    assert_pristine(backend, before)


@pytest.mark.parametrize("kind", ["textual_inversion", "lora", "dreambooth"])
def test_img2img_with_a_prior(
    backend: db.DiffusersBackend,
    baseline: dict[str, np.ndarray],
    priors: dict[str, PriorRef],
    kind: str,
) -> None:
    source = Image.fromarray(baseline[PLAIN].astype(np.uint8))
    plain = pixels(backend.img2img(source, PROMPT, 0.8, STEPS, 3))
    with_prior = pixels(backend.img2img(source, PROMPT, 0.8, STEPS, 3, priors[kind]))
    assert differs(with_prior, plain) > 0.2
    assert np.array_equal(pixels(backend.img2img(source, PROMPT, 0.8, STEPS, 3)), plain)


def test_a_bfloat16_backend_runs_and_every_prior_fits_it(
    model_dir: Path, backend: db.DiffusersBackend, priors: dict[str, PriorRef]
) -> None:
    """Another dtype through the same code: the pipeline and each prior (float32
    files) are cast on load, and the pixels differ from float32's only by rounding."""
    half = db.DiffusersBackend(model_dir, resolve_placement("cpu", "bfloat16"))
    assert half.placement.describe() == "cpu bfloat16"
    assert {p.dtype for p in half.pipeline.unet.parameters()} == {torch.bfloat16}
    plain = pixels(half.text2img(PLAIN, STEPS, SIZE, 0))
    full = pixels(backend.text2img(PLAIN, STEPS, SIZE, 0))
    assert plain.shape == full.shape == (SIZE, SIZE, 3)
    assert 0 < differs(plain, full) < 40
    for kind, prior in priors.items():
        prompt = PROMPT if kind == "textual_inversion" else PLAIN
        with_prior = pixels(half.text2img(prompt, STEPS, SIZE, 0, prior))
        assert differs(with_prior, pixels(half.text2img(prompt, STEPS, SIZE, 0))) > 0.2, kind
    assert np.array_equal(pixels(half.text2img(PLAIN, STEPS, SIZE, 0)), plain)


def test_apply_prior_loads_into_a_pipeline(
    backend: db.DiffusersBackend, priors: dict[str, PriorRef]
) -> None:
    pipe = db.load_pipeline(backend.model_dir, "text2img")
    size = len(pipe.tokenizer)
    ti = priors["textual_inversion"]
    db.apply_prior(pipe, ti.path, ti.kind, ti.sha256, token="<other-name>")
    assert len(pipe.tokenizer) == size + 1
    assert "<other-name>" in pipe.tokenizer.get_vocab()
    booth = priors["dreambooth"]
    db.apply_prior(pipe, booth.path, booth.kind, booth.sha256.upper())
    tuned = load_file(str(booth.path))
    assert all(torch.equal(pipe.unet.state_dict()[k], v) for k, v in tuned.items())
    lora = priors["lora"]
    db.apply_prior(pipe, lora.path, lora.kind, lora.sha256)
    config = pipe.unet.peft_config[db.LORA_ADAPTER_NAME]
    assert (config.r, config.lora_alpha) == (4, 8)  # the file's metadata was read
    assert db.LORA_ADAPTER_NAME in pipe.text_encoder.peft_config
    images = db.generate(pipe, "a <other-name>", steps=2, size=SIZE, seed=0)
    assert images[0].size == (SIZE, SIZE)


@pytest.mark.parametrize("token", ["photo", "sks", "<|endoftext|>"])
def test_textual_inversion_token_that_is_already_a_word_is_refused(
    backend: db.DiffusersBackend, priors: dict[str, PriorRef], token: str
) -> None:
    clash = priors["textual_inversion"]._replace(token=token)
    with pytest.raises(InputError, match="already a word"):
        backend.text2img(PLAIN, STEPS, SIZE, 0, clash)


def test_textual_inversion_of_the_wrong_width_is_refused(
    tmp_path: Path, backend: db.DiffusersBackend
) -> None:
    path = tmp_path / "wide.safetensors"
    save_file({"<wide>": torch.randn(768)}, str(path))
    with pytest.raises(InputError, match="does not fit this model"):
        backend.text2img("a <wide>", STEPS, SIZE, 0, PriorRef(path, "textual_inversion", sha(path)))


def test_modified_prior_is_refused_and_nothing_leaks(
    tmp_path: Path,
    backend: db.DiffusersBackend,
    baseline: dict[str, np.ndarray],
    priors: dict[str, PriorRef],
) -> None:
    before = fingerprint(backend.pipeline)
    for kind, prior in priors.items():
        copy_path = tmp_path / f"{kind}.safetensors"
        data = bytearray(prior.path.read_bytes())
        data[len(data) // 2] ^= 0x40
        copy_path.write_bytes(bytes(data))
        with pytest.raises(PriorHashMismatchError):
            backend.text2img(PROMPT, STEPS, SIZE, 0, prior._replace(path=copy_path))
        with pytest.raises(PriorHashMismatchError):
            blank = Image.new("RGB", (SIZE, SIZE))
            backend.img2img(blank, PROMPT, 0.5, STEPS, 0, prior._replace(path=copy_path))
    assert np.array_equal(pixels(backend.text2img(PROMPT, STEPS, SIZE, 0)), baseline[PROMPT])
    assert_pristine(backend, before)


def test_generation_timing(backend: db.DiffusersBackend) -> None:
    """20 steps at 64x64 through the backend: generous bound for a loaded 2-core box."""
    started = time.perf_counter()
    backend.text2img(PLAIN, 20, SIZE, 0)
    assert time.perf_counter() - started < 20
