"""A home made by release 0.1.0 opens, verifies and keeps working with this code.

The golden home (``tests/data/golden/home-0.1.0``, see its README) was written by the
landed release: its log entries, checkpoints, calibration, enrollments and the
signed output must mean exactly what they meant then.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.provenance.verify import verify_media
from consentry.registry import merkle
from consentry.registry.checkpoint import parse_checkpoint
from consentry.registry.store import Registry

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "home-0.1.0"
OBAMA = "sub_43b236c1f3e6634a273b"
STUDIO = "gte_5fa42644e47a509e77af"
UNINVITED = "gte_24be8c88d071bcbecd7a"
LOG_SIZE = 16
ROOT_HEX = "fffc0aa237bbf9b939e52bb23c56df365e59b9685da30464d9c5c2f13705e331"


@pytest.fixture
def old_home(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A copy of the golden home, its config pointing at the copy's database in the
    absolute form release 0.1.0 wrote."""
    home = tmp_path / "home"
    shutil.copytree(GOLDEN, home)
    url = f"sqlite:///{home / 'registry.db'}"
    config = json.loads((home / "config.json").read_text())
    config["db_url"] = url
    (home / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    yield home, url


def test_the_old_log_verifies_unchanged(old_home: tuple[Path, str]) -> None:
    home, url = old_home
    with Registry.open(home, url) as registry:
        assert registry.log_size() == LOG_SIZE
        assert merkle.root_hash(registry.log.leaf_hashes(LOG_SIZE)).hex() == ROOT_HEX
        old_witness, _ = parse_checkpoint((home / "witness.checkpoint").read_text())
        assert old_witness.tree_size == LOG_SIZE
        assert old_witness.root_hash.hex() == ROOT_HEX
        report = registry.verify_log()
        assert report.ok, report.problems


def test_the_old_signed_output_still_verifies(old_home: tuple[Path, str]) -> None:
    home, url = old_home
    data = (home / "demo" / "restored-allowed.png").read_bytes()
    with Registry.open(home, url) as registry:
        result = verify_media(registry, data, "image/png")
        assert result.ok, (result.codes, result.consent_reason)
        assert result.log_index is not None and result.grant_ids
        edited = bytearray(data)
        edited[len(edited) // 2] ^= 0xFF
        assert not verify_media(registry, bytes(edited), "image/png").ok


def test_the_old_registry_still_gates(old_home: tuple[Path, str]) -> None:
    home, url = old_home
    with Registry.open(home, url) as registry:
        gateway = Gateway(registry, get_engine("sface"))
        assert gateway.index.threshold == pytest.approx(0.3652)  # the old calibration
        photo = home / "demo" / "input-degraded.jpg"
        refused = gateway.check(CheckRequest(UNINVITED, "restore", [photo]))
        assert not refused.allowed
        assert {s for f in refused.faces for s in f["subjects"]} == {OBAMA}  # type: ignore[attr-defined]
        named = gateway.check(CheckRequest(UNINVITED, "generate", [], "Barack Obama on a boat"))
        assert not named.allowed
        registry.grant(OBAMA, STUDIO, ["generate"])
        allowed = gateway.check(CheckRequest(STUDIO, "generate", [], "Barack Obama on a boat"))
        assert allowed.allowed, allowed.reasons
        assert registry.verify_log().ok


def test_the_cli_verifies_the_old_home(old_home: tuple[Path, str]) -> None:
    home, url = old_home
    argv = [sys.executable, "-m", "consentry.cli.main", "log", "verify", "--home", str(home)]
    proc = subprocess.run([*argv, "--db", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{LOG_SIZE} entries" in proc.stdout
