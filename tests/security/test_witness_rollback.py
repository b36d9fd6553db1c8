"""Rollback: an older copy of the database, restored with the home's own witness file.

The home's ``witness.checkpoint`` is restored together with the database, so it
cannot see a rollback. Each party (gateway, verifier, witness) keeps its own
witness state outside the home (``CONSENTRY_WITNESS_DIR``; here a folder per test)
and refuses a log that does not extend it. Every test shows the attack is real (a
party without its own witness state accepts the rolled-back log and the revoked
grant is active again) and that the honest log passes the same checks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry import Registry
from consentry.cli.witness_cmds import parse_witness_keys, require_cosigned
from consentry.errors import CheckpointError, RollbackError
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.signing import SigningKey, checkpoint_key_name
from consentry.registry.witness import WitnessKey, WitnessStore, cosign
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server
from tests.security.conftest import raw
from tests.support.cli import Cli

REVOKED_JOB = CheckRequest("Acme", "generate", [], "a portrait of Quinn Heldout")
OTHER_JOB = CheckRequest("Acme", "generate", [], "a portrait of Rowan Example")


@dataclass
class Scene:
    """A gateway running on a registry whose grant for Quinn was revoked after a backup."""

    registry: Registry  # the gateway's registry, opened before the attack
    gateway: Gateway
    root: Path
    db_url: str
    grant_id: str
    backup_size: int  # log size when the backup was taken (Quinn's grant active)
    backup_home_note: str  # the home's witness.checkpoint at that moment
    api_key: str  # Acme's key for the HTTP gateway

    @property
    def home(self) -> Path:
        return self.registry.home.root


@pytest.fixture
def scene(tmp_path: Path, db_url: str) -> Iterator[Scene]:
    registry = Registry.init(tmp_path / "home", db_url)
    quinn = registry.add_subject("Quinn Heldout")
    rowan = registry.add_subject("Rowan Example")
    _, api_key = registry.add_grantee("Acme")
    grant = registry.grant(quinn.id, "Acme", ["generate"])
    registry.grant(rowan.id, "Acme", ["generate"])
    registry.checkpoint()
    gateway = Gateway(registry, get_engine("sface"))
    assert gateway.check(REVOKED_JOB).allowed  # honest: granted
    size = registry.log_size()
    home_note = registry.home.witness_checkpoint.read_text()
    registry.revoke(grant.id, "consent withdrawn")
    registry.checkpoint()
    assert not gateway.check(REVOKED_JOB).allowed  # honest: revocation wins
    try:
        yield Scene(registry, gateway, tmp_path, db_url, grant.id, size, home_note, api_key)
    finally:
        registry.close()


def restore_backup(scene: Scene) -> None:
    """What restoring the older database copy and its home leaves: every entry from the
    backup's size on is gone (the revocation, later decisions), later checkpoints too,
    and the home's witness file is the one of the backup."""
    registry = scene.registry
    for table in ("revocations", "decisions"):
        raw(registry, f"DELETE FROM {table} WHERE log_index >= :n", n=scene.backup_size)
    raw(registry, "DELETE FROM log_entries WHERE idx >= :n", n=scene.backup_size)
    raw(registry, "DELETE FROM checkpoints WHERE tree_size > :n", n=scene.backup_size)
    registry.home.witness_checkpoint.write_text(scene.backup_home_note)


def attack_truncated(scene: Scene) -> str:
    restore_backup(scene)
    return scene.db_url


def attack_rewritten(scene: Scene) -> str:
    """Restored, then grown past the witnessed size by the operator's own process
    (which signs a checkpoint of the forked tree): larger, but not an extension."""
    restore_backup(scene)
    with Registry.open(scene.home, scene.db_url, witness_dir=scene.root / "attacker") as forked:
        for number in range(4):
            forked.add_grantee(f"Filler {number}")
        forked.checkpoint()
        witnessed = WitnessStore.resolve().latest(forked.origin)
        assert witnessed is not None and forked.log_size() > witnessed.checkpoint.tree_size
    return scene.db_url


def attack_another_log(scene: Scene) -> str:
    """The home is pointed at another registry's database (another genesis key)."""
    other_url = f"sqlite:///{scene.root / 'other.db'}"
    other = Registry.init(scene.root / "other-home", other_url, witness_dir=scene.root / "o")
    other.add_subject("Quinn Heldout")
    other.checkpoint()
    other.close()
    return other_url


ATTACKS = {
    "backup restored (log truncated)": attack_truncated,
    "restored, then regrown (another history)": attack_rewritten,
    "another log's database": attack_another_log,
}


@pytest.mark.attack("rollback: an older database copy restored with the home's witness file")
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_rolled_back_log_is_refused_by_the_external_witness(scene: Scene, attack: str) -> None:
    # honest control: the same checks pass on the log as it is
    with Registry.open(scene.home, scene.db_url) as fresh:
        assert fresh.verify_log().ok, fresh.verify_log().problems
    allowed = scene.gateway.check(OTHER_JOB)
    assert allowed.allowed, allowed.reasons

    url = ATTACKS[attack](scene)

    if attack != "another log's database":
        # the attack is real: a party without witness state of its own (the home's file
        # only, as before) accepts the log and Quinn's revoked grant is active again
        with Registry.open(scene.home, url, witness_dir=scene.root / "naive") as naive:
            assert naive.check_grant(scene.grant_id).id == scene.grant_id
        # the running gateway refuses every job, with the reason
        for job in (REVOKED_JOB, OTHER_JOB):
            with pytest.raises(RollbackError, match="rollback"):
                scene.gateway.check(job)
        report = scene.registry.verify_log()
        assert any(p.startswith("external witness: rollback") for p in report.problems), (
            report.problems
        )
    # a gateway or verifier starting now refuses to open it
    with pytest.raises(RollbackError) as refused:
        Registry.open(scene.home, url)
    assert refused.value.exit_code == 2
    assert "rollback" in str(refused.value) or "another log" in str(refused.value)


@pytest.mark.attack("rollback: a database restored under a running HTTP gateway")
def test_running_http_gateway_refuses_every_job_after_a_rollback(scene: Scene) -> None:
    app = create_app(scene.registry, scene.gateway.engine, hash_admin_key("csa_admin"))
    form = {"purpose": "generate", "prompt": OTHER_JOB.prompt}
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        auth = {"Authorization": f"Bearer {scene.api_key}"}
        honest = http.post("/v1/check", data=form, headers=auth)
        assert honest.status_code == 200 and honest.json()["allowed"] is True, honest.text
        restore_backup(scene)
        for prompt in (OTHER_JOB.prompt, REVOKED_JOB.prompt):
            refused = http.post("/v1/check", data={**form, "prompt": prompt}, headers=auth)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            # the reason is the code; details (paths, sizes) stay in the operator's log
            assert error["code"] == "log_rolled_back", error
            assert "RollbackError" in error["message"], error


@pytest.mark.attack("rollback: a restored backup through the CLI")
def test_restored_backup_is_refused_by_every_cli_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real backup (the home folder with its SQLite file and witness file) restored
    after a revocation: ``log verify``, ``check`` and ``serve`` exit 2. (Set up in
    process, with the same witness folder the subprocesses inherit, to save time.)"""
    home, backup = tmp_path / "home", tmp_path / "backup"
    cli = Cli(home)
    job = ("check", "--as", "Acme", "--purpose", "generate", "--prompt", "Quinn Heldout, smiling")
    with Registry.init(home) as registry:
        quinn = registry.add_subject("Quinn Heldout")
        registry.add_grantee("Acme")
        grant = registry.grant(quinn.id, "Acme", ["generate"])
        registry.checkpoint()
    shutil.copytree(home, backup)
    with Registry.open(home) as registry:
        registry.revoke(grant.id, "consent withdrawn")
        registry.checkpoint()
    assert cli(*job).code == 1  # honest: revoked
    assert cli("log", "verify").code == 0  # honest: verifies

    shutil.rmtree(home)
    shutil.copytree(backup, home)

    with monkeypatch.context() as naive:  # a party with no witness state of its own
        naive.setenv("CONSENTRY_WITNESS_DIR", str(tmp_path / "naive"))
        reopened = cli(*job)
        assert reopened.code == 0, ("the attack should re-open the revoked grant", reopened.err)
    for command in (("log", "verify"), job, ("serve", "--port", "0")):
        result = cli(*command)
        assert result.code == 2, (command, result.out, result.err)
        assert "rollback" in result.err and "refusing" in result.err, result.err
        assert "Traceback" not in result.err
    # the witness state lives in the witness folder, never in the home
    witness_dir = Path(os.environ["CONSENTRY_WITNESS_DIR"])
    assert list((witness_dir / "logs").glob("*.checkpoint"))
    assert not list(home.rglob("logs"))


# -- an independent witness ----------------------------------------------------------


@dataclass
class Log:
    registry: Registry
    witness: WitnessKey
    store: WitnessStore

    def keys(self) -> dict[str, Ed25519PublicKey]:
        return {checkpoint_key_name(k): v for k, v in self.registry.trusted_keys().items()}

    def cosign(self, note: str, proof: list[bytes] | None = None) -> str:
        registry = self.registry
        size = cp.parse_checkpoint(note)[0].tree_size
        return cosign(
            self.store,
            self.witness,
            note,
            proof if proof is not None else (lambda old: registry.consistency_proof(old, size)),
            self.keys(),
            datetime(2030, 1, 1, tzinfo=UTC),
            origin=registry.origin,
        )


@pytest.fixture
def log(tmp_path: Path, sqlite_url: str) -> Iterator[Log]:
    registry = Registry.init(tmp_path / "home", sqlite_url)
    registry.add_subject("Quinn Heldout")
    registry.checkpoint()
    witness_folder = WitnessStore(tmp_path / "independent-witness")
    witness = WitnessKey.create(witness_folder)
    try:
        yield Log(registry, witness, WitnessStore(witness_folder.folder, "cosigned"))
    finally:
        registry.close()


def sign_tree(registry: Registry, hashes: list[bytes], origin: str | None = None) -> str:
    operator = SigningKey.load(registry.home.operator_key)
    checkpoint = cp.Checkpoint(
        origin or registry.origin, len(hashes), merkle.root_hash(hashes), registry.now()
    )
    return cp.sign_checkpoint(
        checkpoint, checkpoint_key_name(operator.key_id), operator.private_key
    )


def forked(registry: Registry, size: int) -> list[bytes]:
    hashes = registry.log.leaf_hashes()[:size]
    hashes[1] = merkle.leaf_hash(b"another subject")
    while len(hashes) < size:
        hashes.append(merkle.leaf_hash(b"filler %d" % len(hashes)))
    return hashes


@pytest.mark.attack("witness asked to co-sign a checkpoint that does not extend its last")
@pytest.mark.parametrize(
    "variant", ["smaller tree", "split view (same size)", "fork that grows", "another log"]
)
def test_witness_refuses_to_cosign_a_non_extending_checkpoint(log: Log, variant: str) -> None:
    registry = log.registry
    first = log.cosign(registry.latest_checkpoint())  # honest: first sight
    registry.add_grantee("Acme")
    second_note = registry.checkpoint()
    second = log.cosign(second_note)  # honest: extends the first, with a proof
    assert cp.verify_cosignature(second, log.witness.name, log.witness.key.public_key)
    size = cp.parse_checkpoint(second)[0].tree_size
    assert size > cp.parse_checkpoint(first)[0].tree_size

    proof: list[bytes] | None = None
    if variant == "smaller tree":
        bad = first
    elif variant == "split view (same size)":
        bad = sign_tree(registry, forked(registry, size))
    elif variant == "fork that grows":
        hashes = forked(registry, size + 2)
        bad, proof = sign_tree(registry, hashes), merkle.consistency_proof(hashes, size)
    else:
        bad = sign_tree(registry, [*registry.log.leaf_hashes(), bytes(32)], origin="another.log/x")
    stored = log.store.latest(registry.origin)
    with pytest.raises(RollbackError):
        log.cosign(bad, proof)
    assert log.store.latest(registry.origin) == stored  # nothing recorded, nothing signed
    registry.add_grantee("Studio")
    assert log.cosign(registry.checkpoint())  # the honest next checkpoint still co-signs


@pytest.mark.attack("verifier requiring a witness cosignature given a note without it")
@pytest.mark.parametrize(
    "variant",
    [
        "no cosignature",
        "another witness",
        "cosignature moved from another checkpoint",
        "operator signature under the witness's name",
    ],
)
def test_verifier_requiring_a_cosignature_refuses_a_note_without_it(
    log: Log, variant: str, tmp_path: Path
) -> None:
    registry = log.registry
    honest = registry.log.add_cosignatures(log.cosign(registry.latest_checkpoint()))
    required = parse_witness_keys([log.witness.vkey])
    require_cosigned(honest, required)  # honest: passes
    registry.add_grantee("Acme")
    plain = registry.checkpoint()  # operator-signed only
    if variant == "no cosignature":
        bad = plain
    elif variant == "another witness":
        stranger = WitnessKey.create(WitnessStore(tmp_path / "stranger"))
        bad = cp.cosign_checkpoint(plain, stranger.name, stranger.key.private_key, registry.now())
    elif variant == "cosignature moved from another checkpoint":
        line = honest.rstrip("\n").split("\n")[-1]
        bad = cp.add_signature(plain, line)
    else:
        operator = SigningKey.load(registry.home.operator_key)
        body = cp.parse_checkpoint(plain)[0]
        bad = cp.merge_signatures(
            plain, cp.sign_checkpoint(body, log.witness.name, operator.private_key)
        )
    with pytest.raises(CheckpointError, match="cosignature"):
        require_cosigned(bad, required)
    if variant != "no cosignature":
        return
    # the same through the verifier's CLI, offline, from a proof bundle
    cli = Cli(registry.home.root)
    bundle = tmp_path / "proof.json"
    bundle.write_text(cli.ok("log", "proof", "1", "--json"))
    operator = ("--public-key", str(registry.home.operator_public))
    witness = ("--witness-key", log.witness.vkey)
    refused = cli("log", "verify-proof", str(bundle), *operator, *witness)
    assert refused.code == 1 and "cosignature" in refused.err, refused.err
    # honest: once the witness co-signs the same checkpoint, the same command passes
    registry.log.add_cosignatures(log.cosign(registry.latest_checkpoint()))
    bundle.write_text(cli.ok("log", "proof", "1", "--json"))
    assert cli("log", "verify-proof", str(bundle), *operator, *witness).code == 0


@pytest.mark.attack("witness CLI asked to co-sign a rolled-back log")
def test_witness_cli_cosigns_extensions_and_refuses_a_rollback(tmp_path: Path) -> None:
    home, backup, folder = tmp_path / "home", tmp_path / "backup", tmp_path / "witness"
    with Registry.init(home) as registry:
        registry.add_subject("Quinn Heldout")
        registry.checkpoint()
    shutil.copytree(home, backup)
    cli = Cli(home)
    vkey = cli.ok("witness", "init", "--witness-dir", str(folder)).strip().splitlines()[-1]
    assert cli.ok("witness", "cosign", "--witness-dir", str(folder)).count("\u2014 ") == 2
    with Registry.open(home) as registry:
        registry.add_grantee("Acme")
        registry.checkpoint()
    cli.ok("witness", "cosign", "--witness-dir", str(folder))  # honest: an extension
    name, public = parse_witness_keys([vkey])[0]
    with Registry.open(home) as registry:
        assert registry.log.cosigned_size(name, public) == registry.log_size()
    shutil.rmtree(home)
    shutil.copytree(backup, home)
    refused = cli("witness", "cosign", "--witness-dir", str(folder))
    assert refused.code == 2 and "rollback" in refused.err, refused.err
    with Registry.open(home, witness_dir=tmp_path / "fresh") as registry:
        assert registry.log.cosigned_size(name, public) == 0  # nothing was co-signed
