"""Training personalised priors for real on the tiny Stable Diffusion pipeline.

The tiny pipeline (random weights, seed 0) is built once for the module; each
prior kind is trained for a few steps on two public-domain photos shipped in the
package (``obama.jpg``, ``obama2.jpg``, centre-cropped to 64x64), and the file it
writes goes through the real loader (:func:`apply_prior` and
:class:`DiffusersBackend`). Resuming from a checkpoint must give the same file,
byte for byte, as the uninterrupted run. Torch runs on one thread (two xdist
workers share two cores, and the bitwise resume check needs a fixed thread
count); nothing may reach the network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses
import json
import math
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from consentry import training as pz
from consentry.errors import EngineError, ImageError, InputError
from consentry.generation.backends import PriorRef
from consentry.generation.backends import diffusers_backend as db
from consentry.generation.placement import Placement
from consentry.generation.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline
from consentry.hashing import sha256_file
from tests.integration._offline import offline_single_thread  # noqa: F401  (autouse)

SIZE = TINY_IMAGE_SIZE
STEPS = 4
EVERY = 2
GEN_STEPS = 4
PLAIN = "a photo of a person"
KINDS = ("textual_inversion", "lora", "dreambooth")
TOKENS = {"textual_inversion": "<sks-person>", "lora": "sks", "dreambooth": "sks"}
RATES = {"textual_inversion": 5e-2, "lora": 1e-2, "dreambooth": 1e-3}
PROMPTS = {
    "textual_inversion": "a photo of <sks-person>",
    "lora": "a photo of sks person",
    "dreambooth": "a photo of sks person",
}
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")


def config(kind: str, **changes: Any) -> pz.TrainConfig:
    fields: dict[str, Any] = {
        "kind": kind,
        "token": TOKENS[kind],
        "steps": STEPS,
        "learning_rate": RATES[kind],
        "resolution": SIZE,
        "batch_size": 1,
        "seed": 7,
        "num_class_images": 2,
        "class_image_steps": 2,
        "lora_rank": 4,
        "checkpoint_every": EVERY,
    }
    return pz.TrainConfig(**{**fields, **changes})


# -- isolation and fixtures ----------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:  # offline: autouse
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """The subject: two photos of one person, centre-cropped and resized to 64x64."""
    faces = resources.files("consentry.data") / "faces"
    result = []
    for name in ("obama.jpg", "obama2.jpg"):
        with resources.as_file(faces / name) as path, Image.open(path) as image:
            rgb = image.convert("RGB")
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        square = rgb.crop((left, top, left + side, top + side))
        result.append(square.resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    return result


@dataclasses.dataclass
class Trained:
    result: pz.TrainResult
    work_dir: Path
    losses: list[tuple[int, int, float]]
    saved: list[Path]


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, photos: list[Image.Image]
) -> dict[str, Trained]:
    """Each kind trained uninterrupted; every PIL save during training is recorded."""
    saved: list[Path] = []
    original = Image.Image.save

    def recording_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        saved.append(Path(fp) if isinstance(fp, str | os.PathLike) else Path("<stream>"))
        original(self, fp, *args, **kwargs)

    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image.Image, "save", recording_save)
        for kind in KINDS:
            work = tmp_path_factory.mktemp(f"train-{kind}")
            losses: list[tuple[int, int, float]] = []
            saved.clear()
            result = pz.train_prior(
                model_dir,
                photos,
                config(kind),
                work,
                progress=lambda step, total, loss, log=losses: log.append((step, total, loss)),  # type: ignore[misc]
            )
            out[kind] = Trained(result, work, losses, list(saved))
    return out


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> db.DiffusersBackend:
    return db.DiffusersBackend(model_dir)


def pixels(images: list[Image.Image]) -> np.ndarray:
    assert len(images) == 1
    return np.asarray(images[0], dtype=np.float64)


def prior_ref(trained: Trained) -> PriorRef:
    result = trained.result
    token = result.token if result.kind == "textual_inversion" else None
    return PriorRef(result.path, result.kind, result.sha256, token)


# -- training each kind ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_training_runs_with_finite_loss_and_writes_the_prior(
    trained: dict[str, Trained], model_dir: Path, kind: str
) -> None:
    run = trained[kind]
    result = run.result
    assert [(s, t) for s, t, _ in run.losses] == [(s, STEPS) for s in range(1, STEPS + 1)]
    assert all(math.isfinite(loss) and loss > 0 for _, _, loss in run.losses)
    assert result.final_loss == run.losses[-1][2]
    assert (result.steps, result.resumed_from, result.kind) == (STEPS, 0, kind)
    assert result.path == run.work_dir / pz.PRIOR_FILE_NAMES[kind]
    assert result.sha256 == sha256_file(result.path)
    assert result.base_model_sha256 == pz.model_folder_sha256(model_dir)
    assert result.config_sha256 == config(kind).sha256()
    checkpoints = sorted(p.name for p in run.work_dir.glob(f"{pz.CHECKPOINT_PREFIX}*"))
    assert checkpoints == [f"checkpoint-{EVERY}", f"checkpoint-{STEPS}"]
    assert not list(run.work_dir.glob(".*")), "a staging folder was left behind"


def test_textual_inversion_learns_only_its_vector(
    trained: dict[str, Trained], backend: db.DiffusersBackend
) -> None:
    state = load_file(str(trained["textual_inversion"].result.path))
    assert list(state) == ["<sks-person>"]
    vector = state["<sks-person>"]
    assert vector.shape == (32,) and vector.dtype == torch.float32
    pipe = backend.pipeline
    noun_ids = pipe.tokenizer("person", add_special_tokens=False).input_ids
    start = pipe.text_encoder.get_input_embeddings().weight[noun_ids].mean(dim=0)
    assert not torch.allclose(vector, start, atol=1e-3), "the embedding did not move"
    assert "<sks-person>" not in pipe.tokenizer.get_vocab()  # base pipeline untouched


def test_lora_file_has_the_loaders_format_and_trained_updates(
    trained: dict[str, Trained],
) -> None:
    path = trained["lora"].result.path
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
    assert keys and all(k.startswith("unet.") and "lora" in k for k in keys)
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert (adapter["unet.r"], adapter["unet.lora_alpha"]) == (4, 4)
    assert adapter["unet.target_modules"] == ["to_k", "to_out.0", "to_q", "to_v"]
    state = load_file(str(path))
    ups = [v for k, v in state.items() if "lora_B" in k]
    assert ups and all(float(v.abs().max()) > 0 for v in ups)  # zero at start, trained since


def test_dreambooth_file_is_a_full_changed_unet(
    trained: dict[str, Trained], backend: db.DiffusersBackend
) -> None:
    state = load_file(str(trained["dreambooth"].result.path))
    base = backend.pipeline.unet.state_dict()
    assert state.keys() == base.keys()
    changed = [k for k, v in base.items() if not torch.equal(state[k], v)]
    assert len(changed) > 0.9 * len(base)


@pytest.fixture(scope="module")
def baseline(backend: db.DiffusersBackend) -> dict[str, np.ndarray]:
    """Base-model pixels for each prompt the tests use (seed 0)."""
    prompts = {*PROMPTS.values(), PLAIN}
    return {prompt: pixels(backend.text2img(prompt, GEN_STEPS, SIZE, 0)) for prompt in prompts}


@pytest.mark.parametrize("kind", KINDS)
def test_trained_prior_changes_generation_through_the_backend(
    trained: dict[str, Trained],
    backend: db.DiffusersBackend,
    baseline: dict[str, np.ndarray],
    kind: str,
) -> None:
    prompt = PROMPTS[kind]
    with_prior = pixels(backend.text2img(prompt, GEN_STEPS, SIZE, 0, prior_ref(trained[kind])))
    assert float(np.abs(with_prior - baseline[prompt]).mean()) > 0.5


def test_textual_inversion_leaves_prompts_without_its_token_alone(
    trained: dict[str, Trained], backend: db.DiffusersBackend, baseline: dict[str, np.ndarray]
) -> None:
    ref = prior_ref(trained["textual_inversion"])
    assert np.array_equal(pixels(backend.text2img(PLAIN, GEN_STEPS, SIZE, 0, ref)), baseline[PLAIN])


def test_apply_prior_loads_each_trained_file_exactly(
    trained: dict[str, Trained], backend: db.DiffusersBackend
) -> None:
    pipe = db.load_pipeline(backend.model_dir, "text2img")
    refs = {kind: prior_ref(trained[kind]) for kind in KINDS}
    booth = refs["dreambooth"]
    db.apply_prior(pipe, booth.path, booth.kind, booth.sha256)
    tuned = load_file(str(booth.path))
    assert all(torch.equal(pipe.unet.state_dict()[k], v) for k, v in tuned.items())
    ti = refs["textual_inversion"]
    db.apply_prior(pipe, ti.path, ti.kind, ti.sha256, ti.token)
    token_id = pipe.tokenizer.convert_tokens_to_ids("<sks-person>")
    row = pipe.text_encoder.get_input_embeddings().weight[token_id]
    assert torch.equal(row, load_file(str(ti.path))["<sks-person>"])
    lora = refs["lora"]
    db.apply_prior(pipe, lora.path, lora.kind, lora.sha256)
    adapter = pipe.unet.peft_config[db.LORA_ADAPTER_NAME]
    assert (adapter.r, adapter.lora_alpha) == (4, 4)
    loaded = {k for k, _ in pipe.unet.named_parameters() if db.LORA_ADAPTER_NAME in k}
    assert len(loaded) == len(load_file(str(lora.path)))


# -- checkpoints and resuming --------------------------------------------------------


class StopTrainingError(Exception):
    pass


def interrupt_at(stop: int) -> pz.ProgressCallback:
    def progress(step: int, total: int, loss: float) -> None:
        if step == stop:
            raise StopTrainingError

    return progress


@pytest.mark.parametrize("kind", KINDS)
def test_resumed_run_gives_the_uninterrupted_bytes(
    tmp_path: Path,
    trained: dict[str, Trained],
    model_dir: Path,
    photos: list[Image.Image],
    kind: str,
) -> None:
    work = tmp_path / "work"
    # reuse the class images the uninterrupted run generated: cached vs fresh must not matter
    if kind != "textual_inversion":
        shutil.copytree(trained[kind].work_dir / pz.CLASS_IMAGES_DIR, work / pz.CLASS_IMAGES_DIR)
    with pytest.raises(StopTrainingError):
        pz.train_prior(model_dir, photos, config(kind), work, progress=interrupt_at(EVERY))
    assert [p.name for p in work.glob(f"{pz.CHECKPOINT_PREFIX}*")] == [f"checkpoint-{EVERY}"]
    assert not (work / pz.PRIOR_FILE_NAMES[kind]).exists()
    resumed = pz.train_prior(model_dir, photos, config(kind), work, resume=True)
    full = trained[kind].result
    assert resumed.resumed_from == EVERY
    assert resumed.steps == STEPS
    assert resumed.final_loss == full.final_loss
    assert resumed.sha256 == full.sha256  # bit-identical weights (and file)


def test_resume_refuses_another_config_model_or_photos(
    tmp_path: Path,
    trained: dict[str, Trained],
    model_dir: Path,
    photos: list[Image.Image],
) -> None:
    work = tmp_path / "work"
    shutil.copytree(trained["textual_inversion"].work_dir, work)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    cfg = config("textual_inversion")
    with pytest.raises(InputError, match="training configuration differs"):
        pz.train_prior(model_dir, photos, dataclasses.replace(cfg, learning_rate=1e-2), work,
                       resume=True)  # fmt: skip
    with pytest.raises(InputError, match="training configuration differs"):
        pz.train_prior(model_dir, photos, dataclasses.replace(cfg, seed=8), work, resume=True)
    other_model = tmp_path / "model"
    shutil.copytree(model_dir, other_model)
    (other_model / "README.md").write_text("changed\n")
    with pytest.raises(InputError, match="base model folder differs"):
        pz.train_prior(other_model, photos, cfg, work, resume=True)
    with pytest.raises(InputError, match="photos differs"):
        pz.train_prior(model_dir, photos[:1], cfg, work, resume=True)
    with pytest.raises(InputError, match="already holds checkpoints"):
        pz.train_prior(model_dir, photos, cfg, work)
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    # the same photos as arrays are the same photos: resuming the finished run re-saves it
    arrays = [np.asarray(photo, dtype=np.uint8) for photo in photos]
    again = pz.train_prior(model_dir, arrays, cfg, work, resume=True)
    assert (again.resumed_from, again.steps) == (STEPS, STEPS)
    assert again.sha256 == trained["textual_inversion"].result.sha256


def test_resume_refuses_a_tampered_checkpoint(
    tmp_path: Path, trained: dict[str, Trained], model_dir: Path, photos: list[Image.Image]
) -> None:
    work = tmp_path / "work"
    shutil.copytree(trained["textual_inversion"].work_dir, work)
    state = work / f"checkpoint-{STEPS}" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0x01
    state.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged or replaced"):
        pz.train_prior(model_dir, photos, config("textual_inversion"), work, resume=True)


def test_checkpoint_holds_weights_optimizer_and_rng_without_pickles(
    trained: dict[str, Trained],
) -> None:
    folder = trained["lora"].work_dir / f"checkpoint-{STEPS}"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.safetensors"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["step"] == STEPS
    assert meta["config_sha256"] == config("lora").sha256()
    tensors = load_file(str(folder / "state.safetensors"))
    assert "rng.generator" in tensors
    params = [k for k in tensors if k.startswith("param.")]
    assert params and all("lora" in k for k in params)
    assert any(k.endswith(".exp_avg_sq") for k in tensors)


# -- the photos never reach the disk -------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_photos_are_never_written(
    trained: dict[str, Trained], photos: list[Image.Image], kind: str
) -> None:
    run = trained[kind]
    class_dir = run.work_dir / pz.CLASS_IMAGES_DIR
    assert all(class_dir in path.parents for path in run.saved), run.saved
    photo_bytes = [np.asarray(p, dtype=np.uint8).tobytes() for p in photos]
    probes = [data[start : start + 96] for data in photo_bytes for start in (0, 6000)]
    class_images = []
    for path in sorted(p for p in run.work_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if class_dir in path.parents:
            assert data.startswith(b"\x89PNG")
            with Image.open(path) as png:
                class_images.append(np.asarray(png.convert("RGB"), dtype=np.float64))
            continue
        assert path.suffix in {".safetensors", ".json"}, path
        assert not data.startswith(IMAGE_MAGIC), path
        assert not any(probe in data for probe in probes), path
    expected = 2 if kind != "textual_inversion" else 0
    assert len(class_images) == expected
    for image in class_images:
        for photo in photos:
            assert float(np.abs(image - np.asarray(photo, dtype=np.float64)).mean()) > 10


# -- bad inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "hypernetwork"}, "unknown prior kind"),
        ({"steps": 0}, "steps"),
        ({"steps": True}, "steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"resolution": 60}, "multiple of 8"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"token": "two words"}, "without spaces"),
        ({"token": ""}, "token"),
        ({"class_prompt": " "}, "class_prompt"),
        ({"instance_prompt": "a photo of a person"}, "{token}"),
        ({"prior_loss_weight": -1.0}, "prior_loss_weight"),
        ({"prior_loss_weight": float("inf")}, "prior_loss_weight"),
        ({"kind": "lora", "token": "sks", "num_class_images": 0}, "num_class_images >= 1"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
    ],
)
def test_bad_config_is_refused(changes: dict[str, Any], message: str) -> None:
    valid = config("textual_inversion")
    with pytest.raises(InputError, match=re.escape(message)):
        dataclasses.replace(valid, **changes)


def test_config_json_is_canonical_and_names_only_what_applies() -> None:
    ti = config("textual_inversion")
    text = ti.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    record = json.loads(text)
    assert record["instance_prompt"] == "a photo of <sks-person>"
    assert "lora_rank" not in record and "num_class_images" not in record
    assert config("textual_inversion", lora_rank=16).to_json() == text
    assert config("textual_inversion", instance_prompt="a photo of {token}").to_json() == text
    assert config("textual_inversion", steps=7).sha256() != ti.sha256()
    lora = json.loads(config("lora").to_json())
    assert lora["instance_prompt"] == "a photo of sks person"
    assert (lora["lora_rank"], lora["num_class_images"], lora["prior_loss_weight"]) == (4, 2, 1.0)
    assert "lora_rank" not in json.loads(config("dreambooth").to_json())
    no_prior = json.loads(config("dreambooth", prior_loss_weight=0.0).to_json())
    assert "num_class_images" not in no_prior


def test_model_folder_hash_is_stable_and_covers_every_file(tmp_path: Path, model_dir: Path) -> None:
    digest = pz.model_folder_sha256(model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert pz.model_folder_sha256(copy) == digest
    config_file = copy / "scheduler" / "scheduler_config.json"
    config_file.write_text(config_file.read_text() + " ")
    assert pz.model_folder_sha256(copy) != digest
    shutil.copytree(model_dir, tmp_path / "renamed")
    (tmp_path / "renamed" / "vae").rename(tmp_path / "renamed" / "vae2")
    assert pz.model_folder_sha256(tmp_path / "renamed") != digest
    with pytest.raises(InputError, match="does not exist"):
        pz.model_folder_sha256(tmp_path / "missing")


def test_bad_photos_and_folders_are_refused(
    tmp_path: Path, model_dir: Path, photos: list[Image.Image]
) -> None:
    cfg = config("textual_inversion", steps=1, checkpoint_every=0)
    work = tmp_path / "work"
    with pytest.raises(InputError, match="no photos"):
        pz.train_prior(model_dir, [], cfg, work)
    with pytest.raises(ImageError, match="at least the training resolution"):
        pz.train_prior(model_dir, [photos[0], photos[1].resize((48, 48))], cfg, work)
    with pytest.raises(ImageError, match="uint8"):
        pz.train_prior(model_dir, [np.zeros((64, 64, 3), dtype=np.float32)], cfg, work)
    with pytest.raises(ImageError, match="uint8"):
        pz.train_prior(model_dir, [np.zeros((64, 64), dtype=np.uint8)], cfg, work)
    with pytest.raises(ImageError, match="not a PIL image"):
        pz.train_prior(model_dir, ["face.jpg"], cfg, work)  # type: ignore[list-item]
    with pytest.raises(InputError, match="does not exist"):
        pz.train_prior(tmp_path / "missing", photos, cfg, work)
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match=r"model_index\.json"):
        pz.train_prior(not_a_model, photos, cfg, work)
    with pytest.raises(InputError, match="already a word"):
        pz.train_prior(model_dir, photos, dataclasses.replace(cfg, token="photo"), work)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        pz.train_prior(model_dir, photos, cfg, tmp_path / "file")
    assert not list(work.rglob("*.safetensors"))


def test_training_placement_is_checked_before_anything_is_written(
    tmp_path: Path, model_dir: Path, photos: list[Image.Image]
) -> None:
    cfg = config("textual_inversion", steps=1, checkpoint_every=0)
    work = tmp_path / "work"
    with pytest.raises(InputError, match="float32"):
        pz.train_prior(
            model_dir, photos, cfg, work, device=Placement(torch.device("cpu"), torch.bfloat16)
        )
    with pytest.raises(InputError, match="CUDA"):
        pz.train_prior(model_dir, photos, cfg, work, device="cuda:4096")
    with pytest.raises(InputError, match="unknown device"):
        pz.train_prior(model_dir, photos, cfg, work, device="gpu")
    assert not work.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_the_result_names_where_it_was_trained(trained: dict[str, Trained], kind: str) -> None:
    assert trained[kind].result.device == "cpu float32"
    assert trained[kind].result.to_dict()["device"] == "cpu float32"


def test_non_finite_loss_raises_engine_error(
    tmp_path: Path,
    model_dir: Path,
    photos: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def poisoned(self: DDPMScheduler, original: Any, noise: Any, timesteps: Any) -> Any:
        return torch.full_like(original, float("nan"))

    monkeypatch.setattr(DDPMScheduler, "add_noise", poisoned)
    work = tmp_path / "work"
    with pytest.raises(EngineError, match="loss became nan at step 1"):
        pz.train_prior(model_dir, photos, config("textual_inversion", steps=2), work)
    assert not (work / pz.PRIOR_FILE_NAMES["textual_inversion"]).exists()
    assert not list(work.glob(f"{pz.CHECKPOINT_PREFIX}*"))
