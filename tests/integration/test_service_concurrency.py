"""The service under concurrency, with checkpoints on a cadence: real uvicorn on
loopback (in a thread, and as ``consentry serve`` processes), real SQLite, real
signatures, the real tiny diffusers pipeline for a released output."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consentry.faces.engines import get_engine
from consentry.provenance.c2pa_io import read_asset
from consentry.provenance.certs import create_dev_pki
from consentry.provenance.manifest import CONSENT_LABEL
from consentry.provenance.verify import verify_media
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.checkpointer import TLOG_PROOF_HEADER, Checkpointer
from consentry.registry.decisions import get_decision
from consentry.registry.offline import verify_inclusion_bundle
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from tests.integration._live import free_port, live_server

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
ADMIN_KEY = "csa_concurrency-admin-key"
INTERVAL = 0.3  # the checkpoint cadence under test


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Home:
    registry: Registry
    obama: str
    granted_key: str  # holds a generate grant from Obama
    other_key: str  # holds none
    grant: str


def _home(root: Path, db_url: str | None = None) -> Home:
    registry = Registry.init(root / "home", db_url)
    create_dev_pki(registry.home.root)
    obama = registry.add_subject("Barack Obama", ["Obama"])
    _, granted_key = registry.add_grantee("Granted")
    _, other_key = registry.add_grantee("Other")
    grant = registry.grant(obama.id, "Granted", ["generate"])
    registry.checkpoint()
    return Home(registry, obama.id, granted_key, other_key, grant.id)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    made = _home(tmp_path)
    try:
        yield made
    finally:
        made.registry.close()


def _checkpoints(registry: Registry) -> int:
    from sqlmodel import func, select

    from consentry.registry.models import CheckpointRow

    with registry.db.read() as session:
        return int(session.exec(select(func.count()).select_from(CheckpointRow)).one())


def _covered(registry: Registry) -> int:
    return cp.parse_checkpoint(registry.latest_checkpoint())[0].tree_size


# ----------------------------------------------------------------------------- in process
JOBS = [  # (grantee, prompt, allowed): the ground truth of each check
    ("granted", "Obama on a beach", True),
    ("other", "Obama on a beach", False),
    ("granted", "a red house at dusk", True),
    ("other", "a red house at dusk", True),
]


def test_concurrent_prompt_only_checks_are_logged_gap_free_and_correct(home: Home) -> None:
    registry = home.registry
    keys = {"granted": home.granted_key, "other": home.other_key}
    start = registry.log_size()
    before = _checkpoints(registry)
    rounds = 12
    jobs = JOBS * rounds
    checkpointer = Checkpointer(registry, interval=INTERVAL)
    app = create_app(
        registry, get_engine("sface"), hash_admin_key(ADMIN_KEY), checkpointer=checkpointer
    )
    with checkpointer, live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:

        def check(job: tuple[str, str, bool]) -> dict[str, object]:
            response = http.post(
                "/v1/check",
                headers=_auth(keys[job[0]]),
                data={"purpose": "generate", "prompt": job[1]},
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(check, jobs))
        # every answer against the ground truth, and the logged decision says the same
        for (_, prompt, allowed), answer in zip(jobs, answers, strict=True):
            assert answer["allowed"] is allowed, (prompt, answer)
            decision = get_decision(registry, str(answer["decision"]))
            assert decision.allowed is allowed and decision.log_index == answer["log_index"]
            assert "proof" not in answer  # a check does not wait for its proof by default
        # one log, gap-free: the decisions are exactly the new entries
        indexes = sorted(int(str(a["log_index"])) for a in answers)
        assert indexes == list(range(start, start + len(jobs)))
        assert registry.log_size() == start + len(jobs)
        assert all(registry.entry(i).kind == "decision" for i in indexes)
        # each receipt's proof comes once a checkpoint covers it, in both formats
        keys_trusted = list(registry.trusted_keys().values())
        last = indexes[-1]
        bundle = http.get(f"/v1/log/proof/{last}")
        assert bundle.status_code == 200, bundle.text
        assert verify_inclusion_bundle(bundle.json(), keys_trusted).tree_size > last
        text = http.get(f"/v1/log/proof/{last}", params={"format": "tlog-proof"}).text
        lines = text.split("\n")
        assert lines[0] == TLOG_PROOF_HEADER and lines[1] == f"index {last}"
        hashes = [h.hex() for h in map(base64.b64decode, lines[2 : lines.index("")])]
        assert hashes == bundle.json()["hashes"]
        assert text.split("\n\n", 1)[1] == bundle.json()["checkpoint"]
    # the cadence, not one checkpoint per decision (the exit signs a last one)
    signed = _checkpoints(registry) - before
    assert 1 <= signed < len(jobs) // 4, signed
    assert _covered(registry) == registry.log_size()


def test_a_check_can_wait_for_its_proof(home: Home) -> None:
    """``wait_for_proof`` (``serve --check-waits-for-proof``): the receipt carries the
    decision's C2SP tlog-proof, from a checkpoint covering it, that proves its leaf."""
    registry = home.registry
    checkpointer = Checkpointer(registry, interval=INTERVAL)
    app = create_app(
        registry,
        get_engine("sface"),
        hash_admin_key(ADMIN_KEY),
        checkpointer=checkpointer,
        wait_for_proof=True,
    )
    with checkpointer, live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        for key, allowed in ((home.granted_key, True), (home.other_key, False)):
            answer = http.post(
                "/v1/check", headers=_auth(key), data={"purpose": "generate", "prompt": "Obama"}
            ).json()
            assert answer["allowed"] is allowed, answer
            body, _, note = str(answer["proof"]).partition("\n\n")
            lines = body.split("\n")
            assert lines[:2] == [TLOG_PROOF_HEADER, f"index {answer['log_index']}"]
            checkpoint = cp.parse_checkpoint(note)[0]
            assert checkpoint.tree_size > answer["log_index"]
            leaf = merkle.leaf_hash(registry.entry(answer["log_index"]).leaf_json.encode())
            hashes = [base64.b64decode(h) for h in lines[2:]]
            merkle.verify_inclusion(
                leaf, answer["log_index"], checkpoint.tree_size, hashes, checkpoint.root_hash
            )


def test_a_prompt_only_check_takes_no_face_lock(home: Home) -> None:
    """Hold the face lock: a prompt-only check still completes; one with an image waits
    for the lock (and completes once it is released)."""
    app = create_app(home.registry, get_engine("sface"), hash_admin_key(ADMIN_KEY))
    lock: threading.Lock = app.state.consentry.faces_lock
    form = {"purpose": "generate", "prompt": "a red house"}
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        auth = _auth(home.granted_key)
        photo = ("biden.jpg", (DATA / "biden.jpg").read_bytes(), "image/jpeg")
        with ThreadPoolExecutor(1) as pool:
            with lock:
                prompt_only = http.post("/v1/check", headers=auth, data=form)
                assert prompt_only.status_code == 200 and prompt_only.json()["allowed"] is True
                with_image = pool.submit(
                    http.post, "/v1/check", headers=auth, data=form, files=[("images", photo)]
                )
                time.sleep(1.0)
                assert not with_image.done()  # it needs face work: it waits for the lock
            answer = with_image.result(timeout=60)
        assert answer.status_code == 200 and answer.json()["allowed"] is True, answer.text


def test_released_output_carries_a_proof_from_a_covering_checkpoint(
    home: Home, tmp_path: Path
) -> None:
    from consentry.generation.tiny import build_tiny_pipeline

    registry = home.registry
    model = build_tiny_pipeline(tmp_path / "model")
    checkpointer = Checkpointer(registry, interval=INTERVAL)
    app = create_app(
        registry,
        get_engine("sface"),
        hash_admin_key(ADMIN_KEY),
        model_dir=model,
        checkpointer=checkpointer,
    )
    with checkpointer, live_server(app) as base, httpx.Client(base_url=base, timeout=120) as http:
        fields = {"prompt": "Obama on a beach", "steps": "3", "size": "64"}
        began = time.monotonic()
        body = http.post("/v1/generate", headers=_auth(home.granted_key), data=fields).json()
        assert body["allowed"] is True and len(body["outputs"]) == 1, body
        png = base64.b64decode(body["outputs"][0]["data_base64"])
        root = (registry.home.root / "pki" / "root.pem").read_bytes()
        consent = read_asset(png, "image/png", root).assertions[CONSENT_LABEL]
        proof = consent["inclusion_proof"]
        assert proof["index"] == body["log_index"] and proof["tree_size"] > body["log_index"]
        assert cp.parse_checkpoint(consent["checkpoint"])[0].tree_size == proof["tree_size"]
        assert checkpointer.signed >= 1  # the cadence (or the bounded wait) signed it
        assert time.monotonic() - began < 60
        # verified offline from the file and the registry's keys, as before
        assert verify_media(registry, png, "image/png").ok
        refused = http.post("/v1/generate", headers=_auth(home.other_key), data=fields).json()
        assert refused["allowed"] is False and refused["outputs"] == []


# ----------------------------------------------------------------------------- processes
@dataclass
class Server:
    process: subprocess.Popen[str]
    base: str


def _serve(home: Path, port: int, *extra: str) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    env |= {
        "CONSENTRY_HOME": str(home),
        "CONSENTRY_ADMIN_KEY": ADMIN_KEY,
        "CONSENTRY_WITNESS_DIR": os.environ["CONSENTRY_WITNESS_DIR"],
        "CONSENTRY_DEVICE": "cpu",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2])),
    }
    argv = [sys.executable, "-m", "consentry.cli.main", "serve", "--port", str(port), *extra]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Server(process, f"http://127.0.0.1:{port}")


def _wait_up(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.process.communicate()[0]
        try:
            if httpx.get(server.base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not start")


def _stop(server: Server) -> str:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            return server.process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            server.process.kill()
    return server.process.communicate()[0]


FOLLOW = 0.2  # the follow interval the servers run with


def test_two_server_processes_share_one_log_and_see_each_others_revocation(
    tmp_path: Path, db_url: str
) -> None:
    made = _home(tmp_path, db_url)
    root = made.registry.home.root
    made.registry.close()
    flags = ("--checkpoint-interval", str(INTERVAL), "--follow-interval", str(FOLLOW))
    servers = [_serve(root, free_port(), *flags) for _ in range(2)]
    try:
        for server in servers:
            _wait_up(server)
        a, b = (httpx.Client(base_url=s.base, timeout=60) for s in servers)
        form = {"purpose": "generate", "prompt": "Obama on a beach"}
        auth = _auth(made.granted_key)
        answers = [c.post("/v1/check", headers=auth, data=form).json() for c in (a, b) * 4]
        assert all(x["allowed"] is True for x in answers), answers
        revoked = a.post(
            f"/v1/grants/{made.grant}/revoke", headers=_auth(ADMIN_KEY), json={"reason": "over"}
        )
        assert revoked.status_code == 200, revoked.text
        # the other process sees the revocation within its follow interval (here: the
        # very next decision, which follows the log's tail and re-checks in its write)
        seen_by = time.monotonic() + FOLLOW
        refused = b.post("/v1/check", headers=auth, data=form).json()
        assert time.monotonic() <= seen_by + 5  # one request, never a long wait
        assert refused["allowed"] is False, refused
        assert any("revoked" in r for r in refused["reasons"]), refused
        answers.append(refused)
        answers.append(a.post("/v1/check", headers=auth, data=form).json())
        assert answers[-1]["allowed"] is False
        proof = b.get(f"/v1/log/proof/{answers[-1]['log_index']}")  # waits for a covering one
        assert proof.status_code == 200, proof.text
        a.close()
        b.close()
    finally:
        logs = [_stop(s) for s in servers]
    with Registry.open(root) as registry:
        indexes = sorted(int(x["log_index"]) for x in answers)
        decisions = [i for i in range(registry.log_size()) if registry.entry(i).kind == "decision"]
        assert decisions == indexes, logs  # both processes' decisions, one gap-free log
        assert _covered(registry) == registry.log_size(), logs  # the exits signed a last one
        report = registry.verify_log()
        assert report.ok, report.problems


def test_serve_with_two_workers_answers_and_logs(tmp_path: Path) -> None:
    made = _home(tmp_path)
    root = made.registry.home.root
    made.registry.close()
    server = _serve(root, free_port(), "--workers", "2", "--checkpoint-interval", str(INTERVAL))
    try:
        _wait_up(server)
        with httpx.Client(base_url=server.base, timeout=60) as http:
            form = {"purpose": "generate", "prompt": "Obama on a beach"}
            answers = [
                http.post("/v1/check", headers=_auth(key), data=form).json()
                for key in (made.granted_key, made.other_key) * 3
            ]
        assert [x["allowed"] for x in answers] == [True, False] * 3, answers
    finally:
        output = _stop(server)
    with Registry.open(root) as registry:
        assert _covered(registry) == registry.log_size(), output
        logged = sorted(int(x["log_index"]) for x in answers)
        assert logged == list(range(logged[0], logged[0] + len(answers)))


def test_one_shot_cli_check_leaves_no_decision_uncovered(tmp_path: Path) -> None:
    made = _home(tmp_path)
    root = made.registry.home.root
    made.registry.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    env |= {
        "CONSENTRY_HOME": str(root),
        "CONSENTRY_WITNESS_DIR": os.environ["CONSENTRY_WITNESS_DIR"],
    }
    for grantee, code in (("Granted", 0), ("Other", 1)):
        argv = [sys.executable, "-m", "consentry.cli.main", "check", "--as", grantee]
        argv += ["--purpose", "generate", "--prompt", "Obama on a beach", "--json"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        receipt = json.loads(done.stdout)
        with Registry.open(root) as registry:
            assert registry.log_size() == receipt["log_index"] + 1
            assert _covered(registry) == registry.log_size()  # covered before the exit
            bundle = registry.inclusion_proof(receipt["log_index"]).to_json()
            verify_inclusion_bundle(bundle, list(registry.trusted_keys().values()))
