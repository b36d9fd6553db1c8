"""Several gateway processes on one PostgreSQL database (issue 12, "several gateways").

Two real ``consentry serve`` processes on loopback append to one real PostgreSQL
log, with concurrent HTTP clients on both, in the two supported deployments:

- ``one-home``: both processes run from one home (one operator key, one witness
  folder): several processes on one host, as ``--workers N`` does;
- ``home-per-host``: the second process runs from a copy of the home (the operator
  key travels with it; a PostgreSQL URL in ``config.json`` is absolute, so the copy
  opens the same database) with a witness folder of its own: a second host.

Checked in each:

(a) the decisions of both processes are one gap-free log: exactly one decision
    entry per answer, interleaved between the processes, every answer right
    against the ground truth, and ``consentry log verify`` exits 0;
(b) a grant revoked through process A is refused by process B: no allow for it
    ever lands after the revocation's log index (the decision's write re-checks
    at the tail, under the database's writer lock), every check B starts after A
    answered the revocation is refused, and B's own pre-check (not the re-check)
    refuses it within the follow interval plus ``SLACK``; the measured delay is
    printed;
(c) one signed checkpoint covers the entries of both processes, both processes
    serve it, and inclusion proofs fetched from either process, of decisions made
    by either, verify against it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.errors import CheckpointError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.decisions import RACE_PREFIX
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.signing import checkpoint_key_name
from consentry.registry.store import Registry
from tests.integration._live import free_port
from tests.support.worlds import Person, new_registry

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "csa_pg-gateways-admin-key"
FOLLOW = 0.2  # --follow-interval of both processes (the default of `consentry serve`)
CHECKPOINT_INTERVAL = 0.3  # --checkpoint-interval of both processes
SLACK = 2.0  # scheduling slack on a loaded machine, on top of the follow interval
CLIENTS = 8  # client threads, alternating between the two processes
BEFORE = 1.5  # seconds of load before the revocation
AFTER = FOLLOW + SLACK + 1.5  # seconds of load after it

OBAMA = "Obama on a beach at noon"
ADA = "Ada Lovelace at her desk"
HOUSE = "a red house at dusk, watercolour"


@dataclass
class World:
    home: Path
    keys: dict[str, str]  # grantee name -> API key
    revoked_grant: str  # Granted's generate grant from Obama, revoked mid-run


def _world(root: Path, db_url: str) -> World:
    people = [Person("Barack Obama", ("Obama",)), Person("Ada Lovelace", ("Ada",))]  # no faces
    registry, (obama, ada) = new_registry(root / "home", db_url, people)
    try:
        _, granted = registry.add_grantee("Granted")
        _, other = registry.add_grantee("Other")
        grant = registry.grant(obama, "Granted", ["generate"])
        registry.grant(ada, "Granted", ["generate"])  # stays: allows go on after the revoke
        registry.checkpoint()
    finally:
        registry.close()
    return World(root / "home", {"Granted": granted, "Other": other}, grant.id)


def _truth(grantee: str, prompt: str, revoked: bool) -> bool:
    """Ground truth of a check (before / after the revocation of Obama's grant)."""
    if prompt == HOUSE:
        return True
    if grantee != "Granted":
        return False
    return prompt == ADA or not revoked


JOBS = [(g, p) for g in ("Granted", "Other") for p in (OBAMA, ADA, HOUSE)]


# ----------------------------------------------------------------------------- processes
@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    output: Path


def _env(home: Path, witness: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    return env | {
        "CONSENTRY_HOME": str(home),
        "CONSENTRY_ADMIN_KEY": ADMIN_KEY,
        "CONSENTRY_WITNESS_DIR": str(witness),
        "CONSENTRY_DEVICE": "cpu",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
    }


def _serve(name: str, home: Path, witness: Path, logs: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "consentry.cli.main", "serve", "--port", str(port)]
    argv += ["--checkpoint-interval", str(CHECKPOINT_INTERVAL)]
    argv += ["--follow-interval", str(FOLLOW)]
    output = logs / f"serve-{name}.log"
    with output.open("wb") as sink:  # a file, not a pipe: access logs never block the server
        process = subprocess.Popen(
            argv, env=_env(home, witness), stdout=sink, stderr=subprocess.STDOUT
        )
    return Server(name, process, f"http://127.0.0.1:{port}", output)


def _wait_up(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.output.read_text(errors="replace")
        try:
            if httpx.get(server.base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"serve {server.name} did not start")


def _stop(server: Server) -> str:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.output.read_text(errors="replace")[-4000:]


@pytest.fixture(params=["one-home", "home-per-host"])
def gateways(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, _witness_dir: Path
) -> Iterator[tuple[World, list[Server], list[tuple[Path, Path]]]]:
    world = _world(tmp_path, postgres_url)
    homes = [world.home, world.home]
    witnesses = [_witness_dir, _witness_dir]
    if request.param == "home-per-host":
        homes[1] = tmp_path / "host-b"
        shutil.copytree(world.home, homes[1])
        witnesses[1] = tmp_path / "witness-b"  # each host keeps its own witness state
    servers = [
        _serve(name, home, witness, tmp_path)
        for name, home, witness in zip("AB", homes, witnesses, strict=True)
    ]
    try:
        for server in servers:
            _wait_up(server)
        yield world, servers, list(zip(homes, witnesses, strict=True))
    finally:
        for server in servers:
            _stop(server)


# ----------------------------------------------------------------------------- load
@dataclass
class Answer:
    server: str
    grantee: str
    prompt: str
    started: float
    body: dict[str, object]

    @property
    def index(self) -> int:
        return int(str(self.body["log_index"]))

    @property
    def allowed(self) -> bool:
        return self.body["allowed"] is True

    @property
    def reasons(self) -> list[str]:
        return [str(r) for r in self.body["reasons"]]  # type: ignore[attr-defined]


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def _client(number: int, server: Server, world: World, load: Load) -> None:
    """Checks until ``load.stop``: clients 0 and 1 (one per process) only send the
    check the revocation flips; the others pick any job."""
    rng = random.Random(number)
    with httpx.Client(base_url=server.base, timeout=60) as http:
        while not load.stop.is_set():
            grantee, prompt = ("Granted", OBAMA) if number < 2 else rng.choice(JOBS)
            started = time.monotonic()
            try:
                response = http.post(
                    "/v1/check",
                    headers={"Authorization": f"Bearer {world.keys[grantee]}"},
                    data={"purpose": "generate", "prompt": prompt},
                )
            except httpx.HTTPError as exc:
                with load.lock:
                    load.failures.append(f"{server.name}: {type(exc).__name__}: {exc}")
                continue
            with load.lock:
                if response.status_code != 200:
                    load.failures.append(f"{server.name}: {response.status_code} {response.text}")
                    continue
                load.answers.append(Answer(server.name, grantee, prompt, started, response.json()))


# ----------------------------------------------------------------------------- the test
def test_two_gateways_on_one_postgres_share_one_log_and_revocations(
    gateways: tuple[World, list[Server], list[tuple[Path, Path]]],
) -> None:
    world, servers, hosts = gateways
    home = hosts[0][0]
    a, b = servers
    load = Load()
    threads = [
        threading.Thread(target=_client, args=(n, servers[n % 2], world, load))
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(BEFORE)
        with httpx.Client(base_url=a.base, timeout=60) as admin:
            revoked = admin.post(
                f"/v1/grants/{world.revoked_grant}/revoke",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                json={"reason": "consent withdrawn"},
            )
        revoked_at = time.monotonic()  # the revocation committed before A answered
        assert revoked.status_code == 200, revoked.text
        revocation = int(revoked.json()["log_index"])
        with httpx.Client(base_url=b.base, timeout=60) as probe:  # B, at once
            response = probe.post(
                "/v1/check",
                headers={"Authorization": f"Bearer {world.keys['Granted']}"},
                data={"purpose": "generate", "prompt": OBAMA},
            )
        answered_in = time.monotonic() - revoked_at
        assert response.status_code == 200, response.text
        at_once = Answer("B", "Granted", OBAMA, revoked_at, response.json())
        with load.lock:
            load.answers.append(at_once)
        time.sleep(AFTER)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)
    assert not load.failures, load.failures[:5]
    answers = sorted(load.answers, key=lambda x: x.index)
    by_server = {s.name: [x for x in answers if x.server == s.name] for s in servers}
    assert all(len(v) >= 10 for v in by_server.values()), {k: len(v) for k, v in by_server.items()}

    # (a) every answer right: before the revocation's log index the grant held, after
    # it it does not, whichever process decided and whenever its pre-check ran
    for answer in answers:
        assert answer.allowed is _truth(answer.grantee, answer.prompt, answer.index > revocation)
    order = "".join(x.server for x in answers)
    assert "ABA" in order or "BAB" in order, order  # not one process's block, then the other's

    # (b) no allow for the revoked grant after its revocation, from either process
    flipped = [x for x in answers if (x.grantee, x.prompt) == ("Granted", OBAMA)]
    assert any(x.allowed and x.index < revocation for x in flipped)  # it was allowed before
    assert not [x for x in flipped if x.allowed and x.index > revocation]
    on_b = [x for x in flipped if x.server == "B" and x.started >= revoked_at]
    assert on_b and not [x for x in on_b if x.allowed], on_b  # B refuses from its next check
    # B's pre-check sees it within the follow interval: after that bound no refusal of
    # B's is left to the write's re-check ("refused at release")
    by_recheck = [x for x in on_b if any(r.startswith(RACE_PREFIX) for r in x.reasons)]
    bound = revoked_at + FOLLOW + SLACK
    assert [x for x in on_b if x.started >= bound], "no check of B's after the bound"
    assert not [x for x in by_recheck if x.started >= bound], by_recheck
    assert all(any("revoked" in r for r in x.reasons) for x in on_b), on_b[:3]
    lag = max((x.started for x in by_recheck), default=revoked_at) - revoked_at
    print(
        f"\nrevocation through A, follow interval {FOLLOW * 1000:.0f} ms: a check sent to B "
        f"as soon as A answered was refused by B's "
        f"{'re-check' if any(x is at_once for x in by_recheck) else 'pre-check'}, answered in "
        f"{answered_in * 1000:.0f} ms; {len(by_recheck)} of B's {len(on_b)} refusals after "
        f"it were left to the write's re-check (the last started {lag * 1000:.0f} ms after); "
        f"{len(answers)} decisions "
        f"(A {len(by_server['A'])}, B {len(by_server['B'])})"
    )

    # (c) one checkpoint covers both processes' entries; proofs from either verify
    last = answers[-1].index
    with (
        httpx.Client(base_url=a.base, timeout=60) as http_a,
        httpx.Client(base_url=b.base, timeout=60) as http_b,
    ):
        assert http_b.get(f"/v1/log/proof/{last}").status_code == 200  # waits for coverage
        deadline = time.monotonic() + 30
        while True:
            notes = [http.get("/v1/log/checkpoint").text for http in (http_a, http_b)]
            if notes[0] == notes[1] and cp.parse_checkpoint(notes[0])[0].tree_size > last:
                break
            assert time.monotonic() < deadline, notes
            time.sleep(CHECKPOINT_INTERVAL)
        note = notes[0]
        with Registry.open(home) as registry:
            keys = registry.trusted_keys()
            size = registry.log_size()
            leaves = {x.index: registry.entry(x.index).leaf_json for x in answers}
        assert size == last + 1  # nothing after the last answer
        checkpoint = cp.parse_checkpoint(note)[0]
        assert checkpoint.tree_size == size
        assert any(
            _verifies(note, checkpoint_key_name(key_id), key) for key_id, key in keys.items()
        )
        samples = [by_server["A"][0], by_server["A"][-1], by_server["B"][0], by_server["B"][-1]]
        for answer in samples:
            for http in (http_a, http_b):  # each process proves the other's decisions too
                bundle = http.get(f"/v1/log/proof/{answer.index}").json()
                assert bundle["checkpoint"] == note and bundle["leaf"] == leaves[answer.index]
                assert verify_inclusion_bundle(bundle, list(keys.values())) == checkpoint
                assert str(answer.body["decision"]) in bundle["leaf"]
                merkle.verify_inclusion(
                    merkle.leaf_hash(bundle["leaf"].encode()),
                    answer.index,
                    checkpoint.tree_size,
                    [bytes.fromhex(h) for h in bundle["hashes"]],
                    checkpoint.root_hash,
                )

    # (a) once both processes stopped: exactly one decision per answer, gap-free
    logs = [_stop(server) for server in servers]
    with Registry.open(home) as registry:
        first_index = answers[0].index
        size = registry.log_size()
        kinds = {i: registry.entry(i).kind for i in range(first_index, size)}
        covered = cp.parse_checkpoint(registry.latest_checkpoint())[0].tree_size
    decisions = sorted(i for i, kind in kinds.items() if kind == "decision")
    assert kinds[revocation] == "revocation", kinds[revocation]
    assert decisions == [x.index for x in answers], logs
    assert sorted([*decisions, revocation]) == list(range(first_index, size)), logs
    assert covered == size, logs  # the exits signed a last checkpoint
    for host_home, witness in dict.fromkeys(hosts):  # each host's view of the one log
        verified = subprocess.run(
            [sys.executable, "-m", "consentry.cli.main", "log", "verify", "--json"],
            env=_env(host_home, witness),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)
        assert report["ok"] is True and report["size"] == size, report


def _verifies(note: str, key_name: str, key: Ed25519PublicKey) -> bool:
    try:
        cp.verify_checkpoint(note, key_name, key)
    except CheckpointError:
        return False
    return True
