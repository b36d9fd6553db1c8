"""Operations that fail open: calibration, enrollment, erasure.

Each attack here is an operator action (or a mistake) that silently weakens the
gate: a threshold measured on too few pairs or with a high FNMR (registered
faces then match nothing, so they are allowed), an enrollment mixing two people,
an erasure that leaves the person's face unrecognised. Every test asserts the
refusal *and* that the honest equivalent (a large enough set, consistent photos,
an opt-out instead of an erasure, a grant before the opt-out) is allowed.

Real SFace on the shipped photos; calibration sets are deterministic variants of
them (tests/integration/_labelled.py), so nothing needs shared/faces. The CLI
runs in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from consentry import Registry
from consentry.errors import EnrollmentRejectedError, InputError, OptedOutError
from consentry.faces.calibration import Rates, calibration_problems, required_pairs
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.faces.thresholds import DEFAULT_THRESHOLDS
from consentry.gate import CheckRequest, Gateway
from consentry.generation.exemplars import register_exemplars
from consentry.identity.enroll import enroll_photos, reenroll_kept_photos
from consentry.registry.biometrics import (
    calibration_state,
    decrypt_photos,
    opt_out_subject,
    record_calibration,
    subject_embeddings,
    undo_calibration,
)
from consentry.registry.models import Calibration
from consentry.registry.prior_files import prior_store_path
from tests.integration._labelled import DATA, PEOPLE, labelled_set
from tests.support.cli import Cli, initialised

SFACE_DEFAULT = DEFAULT_THRESHOLDS["sface"]


@pytest.fixture(scope="module")
def sface() -> FaceEngine:
    return get_engine("sface")


@pytest.fixture
def bare(tmp_path: Path, sqlite_url: str) -> Cli:
    return initialised(tmp_path / "home", sqlite_url)


def _state(cli: Cli) -> tuple[int, float]:
    """(log size, threshold in force for sface)."""
    with Registry.open(cli.home) as registry:
        state = calibration_state(registry, "sface", SFACE_DEFAULT)
        return registry.log_size(), state.threshold


# ------------------------------------------------------------------ calibration
def _shipped(folder: Path) -> Path:
    for identity, names in PEOPLE.items():
        (folder / identity).mkdir(parents=True)
        for name in names:
            shutil.copy(DATA / name, folder / identity / name)
    return folder


def _mislabelled(folder: Path) -> Path:
    """Biden's photos filed under Obama: the 'genuine' pairs include two people."""
    return labelled_set(
        folder,
        6,
        {"obama": ["obama.jpg", "obama2.jpg", "biden.jpg"], "collins": ["astronaut.jpg"]},
    )


Builder = Callable[[Path], Path]

# variant -> (set builder, extra flags, refused-with text, honest set builder, honest flags)
CALIBRATION_ATTACKS: dict[str, tuple[Builder, list[str], list[str], Builder, list[str]]] = {
    "set-too-small": (
        _shipped,
        ["--fmr", "0.2"],
        ["5 impostor pairs", "needs at least 15 (3 / FMR)"],
        lambda folder: labelled_set(folder, 6),
        ["--fmr", "0.02"],
    ),
    "fnmr-above-bound": (
        _mislabelled,
        ["--fmr", "0.05", "--allow-far-threshold"],
        ["exceeds the bound 0.05"],
        lambda folder: labelled_set(folder, 6),
        ["--fmr", "0.05", "--allow-far-threshold"],
    ),
    "far-below-default": (
        lambda folder: labelled_set(folder, 6),
        ["--fmr", "0.2"],
        ["below the shipped default", "--allow-far-threshold"],
        lambda folder: labelled_set(folder, 6),
        ["--fmr", "0.2", "--allow-far-threshold"],
    ),
}


@pytest.mark.attack("calibrate puts an unsafe threshold in force")
@pytest.mark.parametrize("variant", sorted(CALIBRATION_ATTACKS))
def test_calibrate_refuses_an_unsafe_threshold(bare: Cli, tmp_path: Path, variant: str) -> None:
    cli = bare
    build, flags, says, honest_build, honest_flags = CALIBRATION_ATTACKS[variant]
    before = _state(cli)
    refused = cli("calibrate", str(build(tmp_path / "attack")), *flags, "--apply")
    assert refused.code == 2 and "Traceback" not in refused.err, refused.err
    for said in says:
        assert said in refused.err, refused.err
    assert "threshold not applied" in refused.err
    assert _state(cli) == before  # nothing logged, the threshold in force unchanged
    honest = cli.json("calibrate", str(honest_build(tmp_path / "honest")), *honest_flags, "--apply")
    assert isinstance(honest, dict) and honest["applied"] is True and honest["problems"] == []
    assert _state(cli)[1] == pytest.approx(honest["threshold"])  # what matching uses


@pytest.mark.attack("calibrate applies without showing the result, or cannot be undone")
def test_calibrate_is_a_dry_run_by_default_and_undo_restores(bare: Cli, tmp_path: Path) -> None:
    cli = bare
    folder = labelled_set(tmp_path / "set", 6)
    before = _state(cli)
    dry = cli("calibrate", str(folder), "--fmr", "0.02")  # no --apply: a dry run
    assert dry.code == 0 and "dry run: nothing changed" in dry.err
    assert f"in force now: {SFACE_DEFAULT:.4f} (shipped default)" in dry.out
    assert "measured threshold" in dry.out and "genuine and" in dry.out and "FNMR" in dry.out
    assert _state(cli) == before

    applied = cli.json("calibrate", str(folder), "--fmr", "0.02", "--yes")
    assert isinstance(applied, dict) and applied["applied"] is True
    assert applied["current"] == {
        "threshold": SFACE_DEFAULT,
        "source": "shipped default",
        "id": None,
    }
    assert f"measured threshold {applied['threshold']:.4f}" in dry.out  # what was shown
    assert _state(cli)[1] == pytest.approx(applied["threshold"])

    dry_undo = cli.json("calibrate", "--undo")
    assert isinstance(dry_undo, dict) and dry_undo["applied"] is False
    assert dry_undo["threshold"] == SFACE_DEFAULT and dry_undo["restores"] is None
    assert _state(cli)[1] == pytest.approx(applied["threshold"])
    undone = cli.json("calibrate", "--undo", "--apply")
    assert isinstance(undone, dict) and undone["applied"] and undone["action"] == "undo"
    assert _state(cli)[1] == SFACE_DEFAULT
    again = cli("calibrate", "--undo", "--apply")  # nothing measured is in force any more
    assert again.code == 2 and "nothing to undo" in again.err
    with Registry.open(cli.home) as registry:
        assert registry.verify_log().ok


def _measured(threshold: float) -> Calibration:
    return Calibration(
        id="", engine="sface", engine_version="v", threshold=threshold, fmr_target=1e-3,
        fmr=0.0008, fnmr=0.02, eer=0.01, genuine_pairs=300, impostor_pairs=8000,
        dataset_sha256="cd" * 32, created_at="", log_index=-1,
    )  # fmt: skip


def test_undo_walks_back_and_reset_restores_the_default(tmp_path: Path, db_url: str) -> None:
    with Registry.init(tmp_path / "home", db_url) as registry:
        first = record_calibration(registry, _measured(0.33))
        record_calibration(registry, _measured(0.40))
        state = calibration_state(registry, "sface", SFACE_DEFAULT)
        back = record_calibration(registry, undo_calibration(state, "v"))
        assert (back.restores, back.threshold, back.fnmr) == (first.id, 0.33, 0.02)
        assert calibration_state(registry, "sface", SFACE_DEFAULT).threshold == 0.33
        state = calibration_state(registry, "sface", SFACE_DEFAULT)
        record_calibration(registry, undo_calibration(state, "v"))
        state = calibration_state(registry, "sface", SFACE_DEFAULT)
        assert state.threshold == SFACE_DEFAULT and state.stack == ()
        with pytest.raises(InputError, match="nothing to undo"):
            undo_calibration(state, "v")
        registry.checkpoint()
        assert registry.verify_log().ok


def test_calibration_rules_count_pairs_by_the_rule_of_three() -> None:
    assert (required_pairs(1e-3), required_pairs(0.05), required_pairs(0.2)) == (3000, 60, 15)

    def rates(threshold: float, fnmr: float, genuine: int, impostor: int) -> Rates:
        return Rates(threshold, 0.0, fnmr, 0.0, genuine, impostor)

    ok = rates(SFACE_DEFAULT, 0.02, 60, 3000)
    assert calibration_problems(ok, 1e-3, 0.05, SFACE_DEFAULT) == []
    (small,) = calibration_problems(rates(SFACE_DEFAULT, 0.02, 60, 2999), 1e-3, 0.05, SFACE_DEFAULT)
    assert "2999 impostor pairs" in small and "at least 3000" in small
    (few,) = calibration_problems(rates(SFACE_DEFAULT, 0.0, 59, 3000), 1e-3, 0.05, SFACE_DEFAULT)
    assert "59 genuine pairs" in few and "at least 60" in few
    (high,) = calibration_problems(rates(SFACE_DEFAULT, 0.89, 60, 3000), 1e-3, 0.05, SFACE_DEFAULT)
    assert "FNMR 0.8900" in high
    assert (
        calibration_problems(rates(SFACE_DEFAULT, 0.09, 60, 3000), 1e-3, 0.1, SFACE_DEFAULT) == []
    )
    (far,) = calibration_problems(rates(0.60, 0.02, 60, 3000), 1e-3, 0.05, SFACE_DEFAULT)
    assert "above the shipped default" in far
    assert calibration_problems(rates(0.60, 0.02, 60, 3000), 1e-3, 0.05, SFACE_DEFAULT, True) == []
    assert calibration_problems(ok, 0.0, 0.05, SFACE_DEFAULT)  # FMR 0 cannot be measured


# ------------------------------------------------------------------ enrollment
def _registry(home: Path, url: str) -> Iterator[Registry]:
    with Registry.init(home, url) as reg:
        reg.add_subject("Barack Obama")
        reg.add_grantee("Studio")
        yield reg


@pytest.fixture
def registry(tmp_path: Path, sqlite_url: str) -> Iterator[Registry]:
    yield from _registry(tmp_path / "home", sqlite_url)


@pytest.fixture
def any_registry(tmp_path: Path, db_url: str) -> Iterator[Registry]:
    """As ``registry``, on both backends (the opt-out's storage and log checks)."""
    yield from _registry(tmp_path / "home", db_url)


# variant -> (earlier enrollment, the attack's photos, photos named, honest photos)
ENROLLMENT_ATTACKS = {
    "two-people-in-one-enrollment": ([], ["obama.jpg", "biden.jpg"],
                                     {"obama.jpg", "biden.jpg"}, ["obama.jpg", "obama2.jpg"]),
    "intruder-among-genuine-photos": ([], ["obama.jpg", "obama2.jpg", "biden.jpg"],
                                      {"biden.jpg"}, ["obama.jpg", "obama2.jpg"]),
    "single-photo-of-someone-else": (["obama.jpg"], ["biden.jpg"], {"biden.jpg"},
                                     ["obama2.jpg"]),
    "consistent-photos-of-someone-else": (["obama.jpg"], ["biden.jpg", "astronaut.jpg"],
                                          {"biden.jpg", "astronaut.jpg"}, ["obama2.jpg"]),
}  # fmt: skip


@pytest.mark.attack("enrollment mixing two people")
@pytest.mark.parametrize("variant", sorted(ENROLLMENT_ATTACKS))
def test_enrollment_of_another_person_is_refused(
    registry: Registry, sface: FaceEngine, variant: str
) -> None:
    earlier, photos, named, honest = ENROLLMENT_ATTACKS[variant]
    if earlier:
        enroll_photos(registry, sface, "Barack Obama", [DATA / p for p in earlier])
    size = registry.log_size()
    with pytest.raises(EnrollmentRejectedError) as caught:
        enroll_photos(registry, sface, "Barack Obama", [DATA / p for p in photos])
    assert {Path(source).name for source, _ in caught.value.rejected} == named
    assert "does not match" in str(caught.value)
    assert registry.log_size() == size  # all or nothing
    row = enroll_photos(registry, sface, "Barack Obama", [DATA / p for p in honest])
    assert sum(b["kind"] == "embedding" for b in row.blobs) == len(honest)


def test_a_real_change_of_appearance_needs_the_explicit_flag(
    registry: Registry, sface: FaceEngine
) -> None:
    enroll_photos(registry, sface, "Barack Obama", [DATA / "obama.jpg"])
    with pytest.raises(EnrollmentRejectedError, match="--allow-mismatch"):
        enroll_photos(registry, sface, "Barack Obama", [DATA / "biden.jpg"])
    enroll_photos(registry, sface, "Barack Obama", [DATA / "biden.jpg"], allow_mismatch=True)
    # the flag never lets one enrollment mix two people
    with pytest.raises(EnrollmentRejectedError, match="one enrollment, one person"):
        enroll_photos(
            registry, sface, "Barack Obama", [DATA / "obama2.jpg", DATA / "astronaut.jpg"],
            allow_mismatch=True,
        )  # fmt: skip


@pytest.mark.attack("re-enrollment mixing two people")
def test_reenroll_of_mixed_kept_photos_is_refused(registry: Registry, sface: FaceEngine) -> None:
    dlib = get_engine("dlib")
    mixed = registry.add_subject("Mixed")
    enroll_photos(registry, sface, mixed.id, [DATA / "obama.jpg"], keep_photos=True)
    enroll_photos(registry, sface, mixed.id, [DATA / "biden.jpg"], True, allow_mismatch=True)
    with pytest.raises(EnrollmentRejectedError, match="one enrollment, one person"):
        reenroll_kept_photos(registry, dlib, mixed.id)
    enroll_photos(registry, sface, "Barack Obama", [DATA / "obama.jpg", DATA / "obama2.jpg"], True)
    row = reenroll_kept_photos(registry, dlib, "Barack Obama")
    assert row.engine == "dlib" and sum(b["kind"] == "embedding" for b in row.blobs) == 2


# ------------------------------------------------------------------ erasure and opt-out
def _granted(registry: Registry, sface: FaceEngine) -> tuple[Registry, Gateway, str, str]:
    """Obama enrolled with kept photos, an exemplar prior, a grant to Studio naming it."""
    obama = registry.get_subject("Barack Obama").id
    enroll_photos(registry, sface, obama, [DATA / "obama.jpg"], keep_photos=True)
    prior = register_exemplars(registry, obama)
    registry.grant(obama, "Studio", ["restore", "generate"], priors=[prior.sha256])
    return registry, Gateway(registry, sface), obama, prior.id


@pytest.fixture
def granted(registry: Registry, sface: FaceEngine) -> tuple[Registry, Gateway, str, str]:
    return _granted(registry, sface)


OPT_OUT_JOBS = {
    "face": CheckRequest("Studio", "restore", [DATA / "obama2.jpg"]),
    "name": CheckRequest("Studio", "generate", prompt="a portrait of Barack Obama, oil"),
    "prior": CheckRequest("Studio", "generate", prompt="a portrait, oil"),  # + the prior
}


@pytest.mark.attack("opted-out subject used through an earlier grant")
@pytest.mark.parametrize("variant", sorted(OPT_OUT_JOBS))
def test_after_opt_out_every_job_with_them_is_refused(
    granted: tuple[Registry, Gateway, str, str], variant: str
) -> None:
    registry, gateway, obama, prior = granted
    job = OPT_OUT_JOBS[variant]
    if variant == "prior":
        job = CheckRequest(job.grantee, job.purpose, job.images, job.prompt, prior)
    allowed = gateway.check(job)  # the honest equivalent: a grant, before the opt-out
    assert allowed.allowed, allowed.reasons
    opt_out_subject(registry, obama, "subject asked")
    refused = gateway.check(job)
    assert not refused.allowed
    assert any(f"subject {obama} opted out" in r for r in refused.reasons), refused.reasons


@pytest.mark.attack("training on an opted-out subject through an earlier grant")
def test_training_an_opted_out_subject_is_refused_before_anything_runs(
    registry: Registry, sface: FaceEngine, tmp_path: Path
) -> None:
    from consentry.errors import GrantError
    from consentry.training import TrainConfig, train_under_grant

    obama = registry.get_subject("Barack Obama").id
    enroll_photos(registry, sface, obama, [DATA / "obama.jpg"])  # no kept photos
    registry.grant(obama, "Studio", ["train"])
    missing, config = tmp_path / "no-model", TrainConfig.for_kind("lora")
    # the honest equivalent passes the consent gate (and stops at the missing photos)
    with pytest.raises(InputError, match="no kept photos"):
        train_under_grant(registry, "Studio", obama, missing, config, device="cpu")
    opt_out_subject(registry, obama, "asked")
    with pytest.raises(GrantError, match="opted out"):
        train_under_grant(registry, "Studio", obama, missing, config, device="cpu")


@pytest.mark.attack("grant to an opted-out subject")
def test_opt_out_refuses_new_grants_and_keeps_only_what_refusing_needs(
    any_registry: Registry, sface: FaceEngine
) -> None:
    registry, gateway, obama, prior_id = _granted(any_registry, sface)
    biden = registry.add_subject("Joe Biden").id
    registry.grant(biden, "Studio", ["restore"])  # the honest equivalent: not opted out
    prior = next(p for p in registry.list_priors() if p.id == prior_id)
    assert decrypt_photos(registry, obama)
    assert prior_store_path(registry, prior.sha256, prior.kind).exists()
    row = opt_out_subject(registry, obama, "subject asked")
    with pytest.raises(OptedOutError, match="no grant can be made"):
        registry.grant(obama, "Studio", ["restore"])
    with pytest.raises(OptedOutError, match="already opted out"):
        opt_out_subject(registry, obama, "again")
    assert decrypt_photos(registry, obama) == [] and len(json.loads(row.photos_json)) == 1
    assert not prior_store_path(registry, prior.sha256, prior.kind).exists()
    assert len(subject_embeddings(registry, obama, "sface")) == 1  # kept: refusing needs it
    refused = gateway.check(CheckRequest("Studio", "restore", [DATA / "obama2.jpg"]))
    assert not refused.allowed and obama in refused.subjects
    registry.checkpoint()
    report = registry.verify_log()
    assert report.ok, report.problems
    # the opt-out is a signed log entry: deleting its row (to re-open the gate) is caught
    with registry.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM opt_outs WHERE id = :i"), {"i": row.id})
    problems = registry.verify_log().problems
    assert any(row.id in line and "row missing" in line for line in problems), problems


@pytest.mark.attack("erasure silently leaves the person unprotected")
def test_erase_warns_needs_yes_and_opt_out_keeps_refusing(bare: Cli, sface: FaceEngine) -> None:
    cli = bare
    with Registry.open(cli.home) as registry:
        for name, photo in (("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")):
            subject = registry.add_subject(name)
            enroll_photos(registry, sface, subject.id, [DATA / photo], keep_photos=True)
        registry.add_grantee("Studio")
        registry.checkpoint()
    mixed = cli(
        "subject", "enroll", "Barack Obama", str(DATA / "obama2.jpg"), str(DATA / "biden.jpg")
    )
    assert mixed.code == 2 and "biden.jpg" in mixed.err and "one person" in mixed.err
    size, _ = _state(cli)
    unconfirmed = cli("subject", "erase", "Barack Obama")
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.err
    assert "ALLOWED" in unconfirmed.err and "subject opt-out" in unconfirmed.err
    assert cli("subject", "opt-out", "Joe Biden").code == 2  # final too: needs --yes
    assert _state(cli)[0] == size  # nothing erased, nothing opted out
    erased = cli("subject", "erase", "Barack Obama", "--yes", "--json")
    assert erased.code == 0 and "ALLOWED" in erased.err
    value = json.loads(erased.out)
    assert value["protected"] is False and "ALLOWED" in value["warning"]
    opted = cli("subject", "erase", "Joe Biden", "--opt-out", "--yes", "--json")  # = opt-out
    assert opted.code == 0 and "ALLOWED" not in opted.err, opted.err
    assert json.loads(opted.out)["face_recognised"] is True
    granted = cli("grant", "Joe Biden", "--to", "Studio", "--purpose", "restore")
    assert granted.code == 1 and "opted out" in granted.err
    with Registry.open(cli.home) as registry:
        assert registry.verify_log().ok


def test_opt_out_of_an_erased_subject_says_what_is_left(registry: Registry) -> None:
    from consentry.errors import ErasedError
    from consentry.registry.biometrics import erase_subject

    obama = registry.get_subject("Barack Obama").id
    erase_subject(registry, obama, "asked")
    with pytest.raises(ErasedError, match="register them anew"):
        opt_out_subject(registry, obama, "asked")
    assert np.asarray(subject_embeddings(registry, obama, "sface")).size == 0
