"""Training priors only under a ``train`` grant: the real training code on the tiny
pipeline, a real SQLite registry with encrypted kept photos, and the CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import col, select

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry.errors import GrantError
from consentry.gate import RunRequest, run_job
from consentry.generation.tiny import build_tiny_pipeline
from consentry.hashing import sha256_file
from consentry.registry.decisions import get_decision
from consentry.registry.models import Decision
from consentry.registry.prior_files import prior_store_path
from consentry.registry.store import Registry
from consentry.training import TrainConfig, model_folder_sha256
from consentry.training.job import default_work_dir, train_under_grant
from tests.integration._offline import offline_single_thread  # noqa: F401  (autouse)
from tests.support.cli import Cli
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry, sface_gateway


def _config(**changes: object) -> TrainConfig:
    base: dict[str, object] = {
        "kind": "lora",
        "token": "sks",
        "steps": 4,
        "learning_rate": 1e-3,
        "resolution": 64,
        "num_class_images": 1,
        "class_image_steps": 2,
        "checkpoint_every": 2,
    }
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@dataclass
class World:
    registry: Registry
    obama: str
    studio: str


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> Iterator[World]:
    registry, (obama,) = new_registry(
        tmp_path / "home", sqlite_url, [OBAMA], keep_photos=True, pki=True
    )
    studio, _ = registry.add_grantee("Studio")
    yield World(registry, obama, studio.id)
    registry.close()


def _decisions(registry: Registry) -> list[Decision]:
    with registry.db.read() as session:
        return list(session.exec(select(Decision).order_by(col(Decision.log_index))))


def test_training_without_a_train_grant_is_refused_and_logged(world: World, model: Path) -> None:
    with pytest.raises(GrantError, match="no active grant"):
        train_under_grant(world.registry, "Studio", world.obama, model, _config())
    world.registry.grant(world.obama, "Studio", ["restore", "generate"])
    with pytest.raises(GrantError, match="does not cover purpose"):
        train_under_grant(world.registry, "Studio", world.obama, model, _config())
    refusals = _decisions(world.registry)
    assert [d.allowed for d in refusals] == [False, False]
    assert all(d.purpose == "train" for d in refusals)
    assert world.registry.list_priors(world.obama) == []


def test_a_trained_prior_is_registered_bound_and_needs_a_grant_naming_it(
    world: World, model: Path
) -> None:
    grant = world.registry.grant(world.obama, "Studio", ["train"])
    outcome = train_under_grant(world.registry, "Studio", world.obama, model, _config())
    prior = outcome.prior
    assert prior.kind == "lora" and prior.subject_id == world.obama
    details = prior.details
    assert details["grant"] == grant.id and details["training"]["steps"] == 4
    assert details["base_model_sha256"] == model_folder_sha256(model)
    assert len(details["photos"]) == 1
    stored = prior_store_path(world.registry, prior.sha256, prior.kind)
    assert sha256_file(stored) == prior.sha256 == outcome.result.sha256
    assert outcome.start.allowed and outcome.finish.allowed
    assert get_decision(world.registry, outcome.finish.id).outputs == [prior.sha256]
    assert world.registry.verify_log().ok

    gateway = sface_gateway(world.registry)
    job = RunRequest("Studio", "generate", "a photo of sks person", model, prior=prior.id, steps=2)
    assert not run_job(gateway, job).allowed  # the train grant does not name the prior
    world.registry.grant(world.obama, "Studio", ["generate"], priors=[prior.sha256])
    receipt = run_job(gateway, job)
    assert receipt.allowed, receipt.reasons
    assert len(receipt.outputs) == 1 and "memorization" in receipt.details


def test_a_revocation_during_training_discards_the_prior(world: World, model: Path) -> None:
    grant = world.registry.grant(world.obama, "Studio", ["train"])

    def revoke_midway(step: int, total: int, loss: float) -> None:
        if step == 2:
            world.registry.revoke(grant.id, "changed my mind")

    with pytest.raises(GrantError, match="discarded"):
        train_under_grant(
            world.registry, "Studio", world.obama, model, _config(), progress=revoke_midway
        )
    assert world.registry.list_priors(world.obama) == []
    last = _decisions(world.registry)[-1]
    assert last.allowed is False and any("revoked" in r for r in last.reasons)
    assert not list((world.registry.home.root / "priors").glob("*.safetensors"))


def test_interrupted_training_resumes_from_its_checkpoint(world: World, model: Path) -> None:
    world.registry.grant(world.obama, "Studio", ["train"])
    config = _config(kind="textual_inversion", token="<sks-person>", learning_rate=5e-3)

    def interrupt(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_under_grant(world.registry, "Studio", world.obama, model, config, progress=interrupt)
    work = default_work_dir(world.registry, world.obama, config)
    assert (work / "checkpoint-2").is_dir()
    outcome = train_under_grant(world.registry, "Studio", world.obama, model, config, resume=True)
    assert outcome.result.resumed_from == 2 and outcome.result.steps == 4
    assert outcome.prior.kind == "textual_inversion"


def _trainable_home(tmp_path: Path, model: Path, steps: int) -> tuple[Cli, tuple[str, ...]]:
    """A home with Obama enrolled (photos kept) and the grantee Studio, no grant yet;
    and the ``prior train`` arguments of a ``steps``-step 64 px textual inversion."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("subject", "add", "Barack Obama")
    cli.ok("subject", "enroll", "Barack Obama", str(PHOTOS / "obama.jpg"), "--keep-photos")
    cli.ok("grantee", "add", "Studio")
    args = (
        "prior", "train", "Barack Obama", "--kind", "textual-inversion", "--model", str(model),
        "--as", "Studio", "--steps", str(steps), "--resolution", "64", "--checkpoint-every", "0",
    )  # fmt: skip
    return cli, args


def test_prior_train_through_the_cli(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two xdist workers on two cores
    cli, args = _trainable_home(tmp_path, model, steps=2)
    refused = cli(*args)
    assert refused.code != 0 and "no active grant" in refused.err
    cli.ok("grant", "Barack Obama", "--to", "Studio", "--purpose", "train")
    size = cli.json("log", "verify")["size"]  # type: ignore[index]
    for device in ("cuda:4096", "gpu"):  # refused before anything is decided or logged
        bad = cli(*args, "--device", device)
        assert bad.code == 2 and "device" in bad.err and "Traceback" not in bad.err
    bad = cli("generate", "--as", "Studio", "--prompt", "a dog", "--model", str(model),
              "--device", "cpu", "--dtype", "float16")  # fmt: skip
    assert bad.code == 2 and "GPU only" in bad.err
    assert cli.json("log", "verify")["size"] == size  # type: ignore[index]
    trained = cli.json(*args)
    assert isinstance(trained, dict)
    assert trained["prior"]["kind"] == "textual_inversion"
    assert trained["training"]["steps"] == 2
    assert trained["training"]["device"] == "cpu float32"
    assert trained["prior"]["details"]["device"] == "cpu float32"
    assert cli("log", "verify").code == 0


def test_prior_train_keeps_library_output_off_stderr_unless_verbose(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, ``prior train`` prints its answer on stdout and nothing on stderr: no
    diffusers "Loading pipeline components" bar, no library warning, no training bar
    (ours is drawn on a terminal only); a refusal is its one error line. With
    --verbose the library's output comes through (so the quiet run is quiet for a
    reason)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in [k for k in os.environ if k.startswith(("TQDM_", "PYTHONWARN"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    cli, args = _trainable_home(tmp_path, model, steps=1)
    refused = cli(*args)
    assert refused.code == 1 and refused.err.count("\n") == 1, refused.err
    assert refused.err.startswith("error: no active grant") and refused.out == ""
    cli.ok("grant", "Barack Obama", "--to", "Studio", "--purpose", "train")
    trained = cli(*args)
    assert trained.code == 0 and trained.err == "", trained.err
    assert trained.out.startswith("pri_") and "training" not in trained.out.splitlines()[0]
    verbose = cli("--verbose", *args, "--seed", "1")
    assert verbose.code == 0 and "Loading pipeline components" in verbose.err
