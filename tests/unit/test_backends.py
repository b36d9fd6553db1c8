"""Generation backends: every refusal that must happen before a model or prior is read.

Covers prior hash verification (a modified file is refused before a byte of it
is parsed, and the pipeline is left exactly as it was), the refusal of pickle
checkpoints by name and of pickles disguised as ``.safetensors`` without ever
unpickling them, unknown and ``exemplars`` kinds, hub ids and folders without
``model_index.json`` (refused before ``from_pretrained`` is reached), and the
argument checks of ``generate`` / ``img2img``. Nothing here runs a diffusion
step; the pipeline used is the tiny one built in memory.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import json
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
    StableDiffusionImg2ImgPipeline,
)
from PIL import Image
from safetensors.torch import save_file

from consentry.errors import ConsentryError, InputError, RegistryError
from consentry.generation.backends import (
    Backend,
    PriorHashMismatchError,
    verified_copy,
)
from consentry.generation.backends import diffusers_backend as db
from consentry.generation.tiny import make_tiny_pipeline
from consentry.hashing import normalise_sha256, sha256_file

KINDS = ("textual_inversion", "lora", "dreambooth")


class Tripwire:
    """A stand-in pipeline that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the pipeline was touched ({name}) before the check")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pipeline was run")


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipe() -> Any:
    return make_tiny_pipeline(seed=0)


def fingerprint(pipe: Any) -> dict[str, Any]:
    """What a prior could change: vocabulary and every UNet / text-encoder tensor."""
    return {
        "vocab": len(pipe.tokenizer),
        "unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
        "text": {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()},
        "adapters": getattr(pipe.unet, "_hf_peft_config_loaded", False),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["vocab"] == before["vocab"]
    assert after["adapters"] == before["adapters"]
    for part in ("unet", "text"):
        assert after[part].keys() == before[part].keys()
        for key, value in before[part].items():
            assert torch.equal(after[part][key], value), key


def prior_file(tmp_path: Path, kind: str, pipe: Any) -> Path:
    """A well-formed prior of ``kind`` for the tiny pipeline."""
    path = tmp_path / f"{kind}.safetensors"
    if kind == "textual_inversion":
        save_file({"<sks-person>": torch.randn(32)}, str(path))
    elif kind == "lora":
        key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_{}.weight"
        save_file(
            {key.format("A"): torch.randn(4, 64), key.format("B"): torch.randn(64, 4)}, str(path)
        )
    else:
        save_file({k: v + 1.0 for k, v in pipe.unet.state_dict().items()}, str(path))
    return path


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


# -- digests and private copies ----------------------------------------------------


def test_normalise_sha256() -> None:
    digest = "AB" * 32
    assert normalise_sha256(f"  {digest} ") == "ab" * 32
    for bad in ("", "ab" * 31, "zz" * 32, "ab" * 33):
        with pytest.raises(InputError):
            normalise_sha256(bad)


def test_verified_copy_yields_identical_private_copy(tmp_path: Path) -> None:
    source = tmp_path / "p.safetensors"
    source.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several read chunks
    assert sha256_file(source) == sha(source)
    with verified_copy(source, sha(source).upper()) as copy:
        assert copy != source
        assert copy.suffix == ".safetensors"
        assert copy.read_bytes() == source.read_bytes()
        assert (copy.parent.stat().st_mode & 0o077) == 0  # private folder
        folder = copy.parent
    assert not folder.exists()


def test_verified_copy_refuses_a_modified_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "p.safetensors"
    source.write_bytes(b"registered bytes")
    expected = sha(source)
    tamper(source)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(PriorHashMismatchError) as info, verified_copy(source, expected):
        pytest.fail("a mismatching copy was handed out")
    assert info.value.expected == expected
    assert info.value.actual == sha(source)
    assert info.value.path == source
    assert list((tmp_path / "tmp").iterdir()) == []


def test_mismatch_error_place_in_the_tree() -> None:
    error = PriorHashMismatchError(Path("x.safetensors"), "a" * 64, "b" * 64)
    assert isinstance(error, RegistryError)
    assert isinstance(error, ConsentryError)
    assert error.exit_code == 1
    assert "refusing" in str(error)


# -- apply_prior: hash first, then load -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_modified_prior_is_refused_before_touching_the_pipeline(
    tmp_path: Path, kind: str, pipe: Any
) -> None:
    path = prior_file(tmp_path, kind, pipe)
    expected = sha(path)
    tamper(path)
    with pytest.raises(PriorHashMismatchError):
        db.apply_prior(Tripwire(), path, kind, expected, token="<sks-person>")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_modified_prior_leaves_a_real_pipeline_unchanged(
    tmp_path: Path, kind: str, pipe: Any
) -> None:
    path = prior_file(tmp_path, kind, pipe)
    expected = sha(path)
    tamper(path)
    before = fingerprint(pipe)
    with pytest.raises(PriorHashMismatchError):
        db.apply_prior(pipe, path, kind, expected, token="<sks-person>")
    assert_same(before, fingerprint(pipe))


def test_garbage_with_a_wrong_digest_is_a_hash_error_not_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(PriorHashMismatchError):
        db.apply_prior(Tripwire(), path, "lora", "0" * 64)  # type: ignore[arg-type]


def test_garbage_with_the_right_digest_is_refused_as_not_safetensors(
    tmp_path: Path, pipe: Any
) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 100)
    before = fingerprint(pipe)
    with pytest.raises(InputError, match="not a valid safetensors"):
        db.apply_prior(pipe, path, "lora", sha(path))
    assert_same(before, fingerprint(pipe))


@pytest.mark.parametrize("suffix", [".bin", ".ckpt", ".pt", ".pth", ".BIN"])
def test_pickle_checkpoints_are_refused_unread(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / f"prior{suffix}"
    path.write_bytes(pickle.dumps(Payload(marker)))
    for kind in KINDS:
        with pytest.raises(InputError, match="pickle"):
            db.apply_prior(Tripwire(), path, kind, sha(path))  # type: ignore[arg-type]
    assert not marker.exists()


def test_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path: Path, pipe: Any) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "prior.safetensors"
    path.write_bytes(pickle.dumps(Payload(marker)))
    for kind in KINDS:
        with pytest.raises(InputError, match="not a valid safetensors"):
            db.apply_prior(pipe, path, kind, sha(path), token="<x>")
    assert not marker.exists()


def test_other_suffixes_and_missing_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "prior.npz"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"only \.safetensors"):
        db.apply_prior(Tripwire(), other, "lora", sha(other))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="does not exist"):
        db.apply_prior(Tripwire(), tmp_path / "gone.safetensors", "lora", "0" * 64)  # type: ignore[arg-type]
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        db.apply_prior(Tripwire(), folder, "lora", "0" * 64)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "message"), [("exemplars", "reference photos"), ("hypernetwork", "unknown prior kind")]
)
def test_unloadable_kinds_are_refused(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "p.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(InputError, match=message):
        db.apply_prior(Tripwire(), path, kind, sha(path))  # type: ignore[arg-type]


def test_bad_digest_argument_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(InputError, match="SHA-256"):
        db.apply_prior(Tripwire(), path, "lora", "not-a-digest")  # type: ignore[arg-type]


def test_lora_file_without_lora_tensors_is_refused(tmp_path: Path, pipe: Any) -> None:
    path = tmp_path / "p.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(1)}, str(path))
    before = fingerprint(pipe)
    with pytest.raises(InputError, match="not a LoRA"):
        db.apply_prior(pipe, path, "lora", sha(path))
    assert_same(before, fingerprint(pipe))


def test_dreambooth_file_with_wrong_keys_is_refused(tmp_path: Path, pipe: Any) -> None:
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    state.pop("conv_in.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "db.safetensors"
    save_file(state, str(path))
    before = fingerprint(pipe)
    with pytest.raises(InputError, match=r"1 missing key.*1 unexpected"):
        db.apply_prior(pipe, path, "dreambooth", sha(path))
    assert_same(before, fingerprint(pipe))


def test_textual_inversion_file_checks(tmp_path: Path, pipe: Any) -> None:
    two = tmp_path / "two.safetensors"
    save_file({"<a>": torch.zeros(32), "<b>": torch.zeros(32)}, str(two))
    a1111 = tmp_path / "a1111.safetensors"
    save_file({"emb_params": torch.zeros(1, 32)}, str(a1111))
    before = fingerprint(pipe)
    with pytest.raises(InputError, match="one tensor"):
        db.apply_prior(pipe, two, "textual_inversion", sha(two))
    with pytest.raises(InputError, match="pass token"):
        db.apply_prior(pipe, a1111, "textual_inversion", sha(a1111))
    for token in ("", "two words"):
        with pytest.raises(InputError, match="without spaces"):
            db.apply_prior(pipe, a1111, "textual_inversion", sha(a1111), token=token)
    assert_same(before, fingerprint(pipe))


# -- model folders ------------------------------------------------------------------


@pytest.fixture
def no_from_pretrained(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if a refusal reaches diffusers' loader at all."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("from_pretrained was called")

    for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        monkeypatch.setattr(cls, "from_pretrained", boom)
    yield


@pytest.mark.parametrize(
    "model",
    [
        "runwayml/stable-diffusion-v1-5",
        "stabilityai/stable-diffusion-2-1",
        "hf://CompVis/stable-diffusion-v1-4",
        "https://huggingface.co/runwayml/stable-diffusion-v1-5",
    ],
)
@pytest.mark.parametrize("kind", ["text2img", "img2img"])
def test_hub_ids_are_refused(
    model: str,
    kind: db.PipelineKind,
    no_from_pretrained: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # so no relative folder of that name can exist
    with pytest.raises(InputError, match="not an existing local folder"):
        db.load_pipeline(model, kind)
    with pytest.raises(InputError, match="not an existing local folder"):
        db.DiffusersBackend(model)


def test_non_path_model_is_refused(no_from_pretrained: None) -> None:
    for model in (42, None, "", "  "):
        with pytest.raises(InputError, match="model folder path"):
            db.load_pipeline(model, "text2img")  # type: ignore[call-overload]


def test_folder_without_model_index_is_refused(tmp_path: Path, no_from_pretrained: None) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(InputError, match=r"no model_index\.json"):
        db.load_pipeline(tmp_path, "text2img")
    with pytest.raises(InputError, match=r"no model_index\.json"):
        db.load_pipeline(str(tmp_path), "img2img")
    with pytest.raises(InputError, match=r"no model_index\.json"):
        db.DiffusersBackend(tmp_path)


def test_other_pipeline_classes_and_bad_index_are_refused(
    tmp_path: Path, no_from_pretrained: None
) -> None:
    index = tmp_path / "model_index.json"
    index.write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(InputError, match="only Stable Diffusion"):
        db.load_pipeline(tmp_path, "text2img")
    index.write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        db.load_pipeline(tmp_path, "text2img")


def test_unknown_pipeline_kind_is_refused(tmp_path: Path, no_from_pretrained: None) -> None:
    with pytest.raises(InputError, match="text2img or img2img"):
        db.load_pipeline(tmp_path, "inpaint")  # type: ignore[call-overload]


# -- run arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 60},
        {"size": (64, 60)},
        {"size": 0},
        {"size": 4096},
        {"size": (64,)},
        {"size": "64"},
        {"size": True},
        {"steps": 0},
        {"steps": db.MAX_STEPS + 1},
        {"steps": 2.5},
        {"seed": -1},
        {"seed": 2**63},
        {"seed": "1"},
        {"guidance": -1.0},
        {"num_images": 0},
        {"num_images": db.MAX_IMAGES + 1},
    ],
)
def test_generate_argument_checks(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"steps": 10, "size": 64, "seed": 0, **kwargs}
    with pytest.raises(InputError):
        db.generate(Tripwire(), "a photo", **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strength": 0.0},
        {"strength": 1.5},
        {"strength": 0.05, "steps": 10},  # int(10 * 0.05) == 0 steps
        {"steps": 0},
        {"seed": -5},
    ],
)
def test_img2img_argument_checks(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"strength": 0.5, "steps": 10, "seed": 0, **kwargs}
    image = Image.new("RGB", (64, 64))
    with pytest.raises(InputError):
        db.img2img(Tripwire(), image, "a photo", **args)  # type: ignore[arg-type]


def test_img2img_needs_an_image() -> None:
    with pytest.raises(InputError, match="PIL image"):
        db.img2img(Tripwire(), b"png", "x", strength=0.5, steps=10, seed=0)  # type: ignore[arg-type]


def test_diffusers_backend_satisfies_the_protocol() -> None:
    assert issubclass(db.DiffusersBackend, Backend)
