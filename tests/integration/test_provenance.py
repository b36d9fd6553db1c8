"""Released outputs end to end: decision in the log, signed C2PA manifest, verification.

A real registry (SQLite, and PostgreSQL where the storage matters), the dev PKI that
``init`` creates, real c2pa-python signing and reading, and the ``consentry`` CLI in a
subprocess.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from consentry.cli import main
from consentry.errors import InputError, ManifestError, NotFoundError, ProvenanceError
from consentry.provenance.c2pa_io import read_asset
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.manifest import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    CONSENT_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    TRAINING_MINING_LABEL,
    pseudonym_key,
    subject_pseudonym,
)
from consentry.provenance.sign import sign_output
from consentry.provenance.verify import mime_of, read_media, verify_media
from consentry.registry.decisions import grant_valid_at_index, record_decision
from consentry.registry.models import Decision, Grant, Grantee, Prior, Subject
from consentry.registry.store import Registry

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
PRIOR_SHA = "ab" * 32


def make_image(mime: str, seed: int = 0, size: int = 128) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, FORMATS[mime])
    return out.getvalue()


@dataclass
class Setup:
    registry: Registry
    subject: Subject
    other: Subject
    grantee: Grantee
    prior: Prior
    grant: Grant
    decision: Decision  # allowed, generate, with the prior
    restore: Decision  # allowed, restore, with the prior


def build(home: Path, db_url: str) -> Setup:
    registry = Registry.init(home, db_url)
    create_dev_pki(registry.home.root)
    subject = registry.add_subject("Ada Lovelace")
    other = registry.add_subject("Charles Babbage")
    grantee, _ = registry.add_grantee("Studio")
    prior = registry.add_prior(subject.id, "lora", "sd15", sha256=PRIOR_SHA, size=4096)
    grant = registry.grant(subject.id, grantee.id, ["generate", "restore"], priors=[PRIOR_SHA])
    decision = record_decision(
        registry, grantee.id, "generate", True, ["consented"], [grant.id], [subject.id],
        PRIOR_SHA, [], ["cd" * 32],
    )  # fmt: skip
    restore = record_decision(
        registry, grantee.name, "restore", True, [], [grant.id], [subject.id],
        PRIOR_SHA, ["ef" * 32], [],
    )  # fmt: skip
    return Setup(registry, subject, other, grantee, prior, grant, decision, restore)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("provenance")
    s = build(base / "home", f"sqlite:///{base / 'registry.db'}")
    yield s
    s.registry.close()


def generated(s: Setup, mime: str, seed: int = 0) -> bytes:
    return sign_output(
        s.registry, make_image(mime, seed), mime, action="generate",
        decision=s.decision, grants=[s.grant], prior=s.prior,
    )  # fmt: skip


def consent_of(s: Setup, data: bytes, mime: str) -> dict[str, Any]:
    root = (s.registry.home.root / "pki" / "root.pem").read_bytes()
    report = read_asset(data, mime, root)
    assert report.state == "trusted", report.codes
    return report.assertions | {"_manifest": report.active_manifest}


# -- signing and verifying -------------------------------------------------------------------


@pytest.mark.parametrize("mime", list(FORMATS))
def test_generated_output_verifies(setup: Setup, mime: str) -> None:
    s = setup
    signed = generated(s, mime)
    result = verify_media(s.registry, signed, mime)
    assert result.ok, result
    assert result.c2pa_state == "trusted" and result.codes == []
    assert result.consent_ok, result.consent_reason
    assert result.decision_id == s.decision.id
    assert result.grant_ids == [s.grant.id]
    assert result.subject_ids == [s.subject.id]
    assert result.log_index == s.decision.log_index

    found = consent_of(s, signed, mime)
    (created,) = found["c2pa.actions.v2"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["parameters"]["ingredients"][0]["url"].endswith("c2pa.ingredient.v3")
    assert found[TRAINING_MINING_LABEL]["entries"] == {
        name: {"use": "notAllowed"}
        for name in (
            "cawg.ai_generative_training",
            "cawg.ai_inference",
            "cawg.ai_training",
            "cawg.data_mining",
        )
    }
    manifest = found["_manifest"]
    assert "thumbnail" not in manifest
    (prior,) = manifest["ingredients"]
    assert prior["relationship"] == "inputTo"
    assert prior["metadata"]["org.consentry.prior"]["sha256"] == PRIOR_SHA
    assert prior["metadata"]["org.consentry.prior"]["kind"] == "lora"
    assert prior["data_types"] == [{"type": "c2pa.types.model"}]


def test_consent_assertion_fields(setup: Setup) -> None:
    s = setup
    consent = consent_of(s, generated(s, "image/jpeg"), "image/jpeg")[CONSENT_LABEL]
    pseudonym = subject_pseudonym(pseudonym_key(s.registry), s.subject.id)
    assert consent["decision"] == s.decision.id
    assert consent["purpose"] == "generate"
    assert consent["grants"] == [s.grant.id]
    assert consent["subjects"] == [pseudonym]
    assert consent["prior_sha256"] == PRIOR_SHA
    assert consent["registry_key_id"] == s.registry.key_id
    assert consent["log_index"] == s.decision.log_index
    proof = consent["inclusion_proof"]
    assert proof["index"] == s.decision.log_index
    assert proof["tree_size"] > s.decision.log_index
    assert proof["leaf_hash"] == s.registry.entry(s.decision.log_index).leaf_hash
    assert consent["checkpoint"].startswith(s.registry.origin + "\n")
    # the media carry no registry subject id, not even inside the proof
    text_form = json.dumps(consent)
    assert s.subject.id not in text_form and len(pseudonym) == 64


def test_restoration_has_parent_ingredient(setup: Setup) -> None:
    s = setup
    parent = make_image("image/jpeg", seed=5)
    signed = sign_output(
        s.registry, make_image("image/png", seed=6), "image/png", action="restore",
        decision=s.restore, grants=[s.grant], prior=s.prior, parent=parent,
    )  # fmt: skip
    result = verify_media(s.registry, signed, "image/png")
    assert result.ok, result
    found = consent_of(s, signed, "image/png")
    opened, edited = found["c2pa.actions.v2"]["actions"]
    assert opened["action"] == "c2pa.opened"
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    by_relation = {i["relationship"]: i for i in found["_manifest"]["ingredients"]}
    assert set(by_relation) == {"inputTo", "parentOf"}
    parent_ingredient = by_relation["parentOf"]
    assert parent_ingredient["format"] == "image/jpeg"
    assert parent_ingredient["metadata"]["org.consentry.input"]["sha256"] == (
        hashlib.sha256(parent).hexdigest()
    )
    assert opened["parameters"]["ingredients"][0]["url"].endswith(parent_ingredient["label"])


def test_sign_output_refuses_mismatched_requests(setup: Setup) -> None:
    s = setup
    jpeg = make_image("image/jpeg")
    with pytest.raises(ManifestError, match="allowed 'generate', not 'restore'"):
        sign_output(
            s.registry, jpeg, "image/jpeg", action="restore", decision=s.decision,
            grants=[s.grant], prior=s.prior, parent=jpeg,
        )  # fmt: skip
    with pytest.raises(ManifestError, match="grants"):
        sign_output(
            s.registry, jpeg, "image/jpeg", action="generate", decision=s.decision,
            grants=[], prior=s.prior,
        )  # fmt: skip
    with pytest.raises(ManifestError, match="a restoration needs its input image"):
        sign_output(
            s.registry, jpeg, "image/jpeg", action="restore", decision=s.restore,
            grants=[s.grant], prior=s.prior,
        )  # fmt: skip
    refused = record_decision(
        s.registry, s.grantee.id, "generate", False, ["no grant"], [], [s.other.id],
        None, [], [],
    )  # fmt: skip
    with pytest.raises(ProvenanceError, match="refused"):
        sign_output(
            s.registry, jpeg, "image/jpeg", action="generate", decision=refused,
            grants=[], prior=None,
        )  # fmt: skip


def test_record_decision_validates(setup: Setup) -> None:
    s = setup
    with pytest.raises(InputError, match="unknown purpose"):
        record_decision(s.registry, s.grantee.id, "paint", True, [], [], [], None, [], [])
    with pytest.raises(InputError, match="a refusal needs at least one reason"):
        record_decision(s.registry, s.grantee.id, "generate", False, [], [], [], None, [], [])
    with pytest.raises(NotFoundError, match="no grant"):
        record_decision(s.registry, s.grantee.id, "generate", True, [], ["grt_x"], [], None, [], [])
    with pytest.raises(NotFoundError, match="no subject"):
        record_decision(s.registry, s.grantee.id, "generate", True, [], [], ["sub_x"], None, [], [])
    with pytest.raises(NotFoundError, match="no grantee"):
        record_decision(s.registry, "nobody", "generate", True, [], [], [], None, [], [])
    with pytest.raises(InputError, match="not a SHA-256"):
        record_decision(s.registry, s.grantee.id, "generate", True, [], [], [], None, ["x"], [])


def test_mime_and_input_caps(setup: Setup, tmp_path: Path) -> None:
    for mime in FORMATS:
        path = tmp_path / f"x.{FORMATS[mime].lower()}"
        path.write_bytes(make_image(mime))
        assert mime_of(path) == mime
    tiff = tmp_path / "x.tif"
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    with pytest.raises(InputError, match="not a JPEG, PNG or WebP"):
        mime_of(tiff)
    big = tmp_path / "big.jpg"
    big.write_bytes(make_image("image/jpeg") + b"\0" * 2048)
    with pytest.raises(InputError, match="more than the limit"):
        read_media(big, max_bytes=1024)


# -- grant validity at a log index -------------------------------------------------------------


def test_grant_valid_at_index_rules(tmp_path: Path) -> None:
    now = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    registry = Registry.init(tmp_path / "home", f"sqlite:///{tmp_path / 'r.db'}", clock=lambda: now)
    with registry:
        subject = registry.add_subject("Ada")
        grantee, _ = registry.add_grantee("Studio")
        grant = registry.grant(
            subject.id, grantee.id, ["generate"], not_after=now + timedelta(days=10)
        )
        assert grant_valid_at_index(registry, grant.id, grant.log_index + 1, now)[0]
        ok, why = grant_valid_at_index(registry, grant.id, grant.log_index, now)
        assert not ok and "not before the decision" in why
        ok, why = grant_valid_at_index(registry, grant.id, 99, now + timedelta(days=10))
        assert not ok and "expired" in why
        ok, why = grant_valid_at_index(registry, grant.id, 99, "2031-05-01T00:00:00Z")
        assert not ok and "not yet valid" in why
        revocation = registry.revoke(grant.id, "withdrawn")
        ok, why = grant_valid_at_index(registry, grant.id, revocation.log_index + 1, now)
        assert not ok and f"revoked at log index {revocation.log_index}" in why
        # consent at the time: a decision before the revocation stays valid
        assert grant_valid_at_index(registry, grant.id, revocation.log_index, now)[0]
        assert not grant_valid_at_index(registry, "grt_missing", 5, now)[0]


# -- storage: both backends --------------------------------------------------------------------


def test_sign_verify_and_log_verify_on_each_backend(tmp_path: Path, db_url: str) -> None:
    s = build(tmp_path / "home", db_url)
    with s.registry:
        signed = generated(s, "image/jpeg")
        assert verify_media(s.registry, signed, "image/jpeg").ok
        report = s.registry.verify_log()
        assert report.ok, report.problems
        assert s.registry.entry(s.decision.log_index).kind == "decision"

        with s.registry.db.writer.begin() as conn:
            conn.execute(
                text("UPDATE decisions SET purpose = 'train' WHERE id = :i"), {"i": s.decision.id}
            )
        problems = s.registry.verify_log().problems
        assert any(s.decision.id in p and "purpose" in p for p in problems), problems
        # an edited row does not change the logged leaf: the output still verifies
        assert verify_media(s.registry, signed, "image/jpeg").ok


# -- the command line --------------------------------------------------------------------------


def subprocess_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONSENTRY_") or k == "CONSENTRY_WITNESS_DIR"
    }
    env["CONSENTRY_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "consentry.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """The console entry point run in-process (a subprocess costs seconds here)."""

    def invoke(home: Path, *args: str) -> Ran:
        for name in [k for k in os.environ if k.startswith("CONSENTRY_")]:
            if name == "CONSENTRY_WITNESS_DIR":
                continue
            monkeypatch.delenv(name)
        monkeypatch.setenv("CONSENTRY_HOME", str(home))
        monkeypatch.setattr(sys, "argv", ["consentry", *args])
        capsys.readouterr()
        try:
            main.run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return invoke


def test_cli_verify(setup: Setup, tmp_path: Path, cli: Any) -> None:
    s = setup
    home = s.registry.home.root
    good = tmp_path / "out.jpg"
    good.write_bytes(generated(s, "image/jpeg"))
    result = subprocess_cli(home, "verify", str(good), "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["ok"] and body["c2pa_state"] == "trusted" and body["consent_ok"]
    assert body["subject_ids"] == [s.subject.id] and body["decision_id"] == s.decision.id

    text_out = cli(home, "verify", str(good))
    assert text_out.code == 0, text_out.err
    assert "consent:  ok" in text_out.out and s.subject.id in text_out.out

    plain = tmp_path / "plain.png"
    plain.write_bytes(make_image("image/png"))
    ran = cli(home, "verify", str(plain))
    assert ran.code == 1, (ran.out, ran.err)
    assert "c2pa:     none" in ran.out and "no C2PA manifest" in ran.out
    assert ran.err.count("\n") == 1 and "does not verify" in ran.err
    ran = cli(home, "verify", str(plain), "--json")
    assert ran.code == 1 and json.loads(ran.out)["c2pa_state"] == "none"

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    ran = cli(home, "verify", str(junk))
    assert ran.code == 2 and ran.err.startswith("error: ") and ran.err.count("\n") == 1
    ran = cli(home, "verify", str(tmp_path / "missing.jpg"))
    assert ran.code == 2 and ran.err.startswith("error: ")


def test_cli_init_creates_dev_pki_and_certs_commands(tmp_path: Path, cli: Any) -> None:
    home = tmp_path / "home"
    ran = cli(home, "init", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert ran.code == 0, ran.err
    root = home / "pki" / "root.pem"
    assert f"C2PA root cert:   {root}" in ran.out
    shown = cli(home, "certs", "show", "--json")
    assert shown.code == 0, shown.err
    info = json.loads(shown.out)
    assert info["kind"] == "dev" and info["alg"] == "es256" and info["key_held"]
    assert [c["role"] for c in info["chain"]] == ["signer", "intermediate 1"]
    assert "C2PA signer" in cli(home, "certs", "show").out
    exported = tmp_path / "root.pem"
    assert cli(home, "certs", "export-root", str(exported)).code == 0
    assert exported.read_bytes() == root.read_bytes()
    again = cli(home, "certs", "init")
    assert again.code == 1 and "already exists" in again.err

    # an organisation's chain: here another dev PKI's signer, installed with --chain/--key
    other = create_dev_pki(tmp_path / "org", org="Org")
    bad = cli(home, "certs", "use", "--chain", str(other.root_cert), "--key", str(other.root_key))
    assert bad.code == 2 and bad.err.startswith("error: ")
    used = cli(
        home, "certs", "use", "--chain", str(other.chain), "--key", str(other.signer_key),
        "--root", str(other.root_cert),
    )  # fmt: skip
    assert used.code == 0, used.err
    info = json.loads(cli(home, "certs", "show", "--json").out)
    assert info["kind"] == "custom" and "Org" in info["chain"][0]["subject"]
    nowhere = cli(tmp_path / "nowhere", "certs", "show")
    assert nowhere.code == 2 and "no registry" in nowhere.err
