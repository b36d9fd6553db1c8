"""``consentry serve`` in a subprocess: no API key in what it prints (startup,
access log, decision lines), and ``--log-json`` prints one JSON line per decision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from consentry.cli.serve_cmds import ADMIN_KEY_FILE, NEW_KEY_FILE
from consentry.provenance.certs import create_dev_pki
from consentry.registry.store import Registry
from consentry.server import hash_admin_key
from tests.integration._live import free_port

ADMIN_KEY = "csa_never-in-the-log-4d1f9a"


def _env(home: Path, admin_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    env |= {
        "CONSENTRY_HOME": str(home),
        "CONSENTRY_WITNESS_DIR": os.environ["CONSENTRY_WITNESS_DIR"],
        "CONSENTRY_DEVICE": "cpu",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2])),
    }
    if admin_key is not None:
        env["CONSENTRY_ADMIN_KEY"] = admin_key
    return env


def _serve(env: dict[str, str], port: int, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "consentry.cli.main", "serve", "--port", str(port), *extra]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_up(process: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return out + err


def _home(root: Path) -> tuple[Path, str]:
    registry = Registry.init(root / "home")
    create_dev_pki(registry.home.root)
    registry.add_subject("Barack Obama", ["Obama"])
    _, grantee_key = registry.add_grantee("Studio")
    registry.checkpoint()
    home = registry.home.root
    registry.close()
    return home, grantee_key


def test_no_key_in_the_server_output(tmp_path: Path) -> None:
    home, grantee_key = _home(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _serve(_env(home, ADMIN_KEY), port, "--access-log", "--log-json")
    try:
        _wait_up(process, base)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        grantee = {"Authorization": f"Bearer {grantee_key}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/v1/grants", headers=admin).status_code == 200  # honest
            assert http.get(f"/v1/grants?key={ADMIN_KEY}").status_code == 401  # key in a URL
            assert http.get(f"/v1/grants?api_key={grantee_key}", headers=admin).status_code == 200
            assert http.get("/v1/grants", headers={"Authorization": "Bearer " + ADMIN_KEY[:-1]}
                            ).status_code == 401  # fmt: skip
            check = http.post("/v1/check", headers=grantee, data={"purpose": "generate",
                              "prompt": "Obama on a beach"})  # fmt: skip
            assert check.status_code == 200 and check.json()["allowed"] is False
    finally:
        output = _stop(process)
    assert ADMIN_KEY not in output and ADMIN_KEY[:-1] not in output
    assert grantee_key not in output
    assert "/v1/grants?[redacted]" in output  # the access log ran, its queries redacted
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"')]
    decisions = [line for line in lines if line.get("event") == "decision"]
    assert len(decisions) == 1 and decisions[0]["id"] == check.json()["decision"]
    assert decisions[0]["outcome"] == "refused" and "Obama" not in json.dumps(decisions)


def test_a_new_admin_key_goes_to_a_private_file_not_the_log(tmp_path: Path) -> None:
    home, _ = _home(tmp_path)
    port = free_port()
    process = _serve(_env(home, None), port)
    try:
        _wait_up(process, f"http://127.0.0.1:{port}")
        made = home / NEW_KEY_FILE
        key = made.read_text().strip()
        assert made.stat().st_mode & 0o077 == 0
        assert (home / ADMIN_KEY_FILE).read_text().strip() == hash_admin_key(key)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/grants", headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
    finally:
        output = _stop(process)
    assert key.startswith("csa_") and key not in output
    assert str(made) in output
