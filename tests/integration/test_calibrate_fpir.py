"""``consentry calibrate --fpir`` through the real CLI, and the warnings past its budget.

The labelled set is the shipped photos' variants (tests/integration/_labelled.py):
3 identities, 32 photos, so 32 x 2 = 64 impostor probe-subject pairs. With no
false match, 64 pairs bound the per-subject rate at 1 - 0.05 ** (1/64) = 0.0457
(95%): enough for an FPIR of 0.05 at N = 1, not for 0.01 (which needs 299 pairs).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from consentry import Registry
from consentry.faces.engines import get_engine
from consentry.faces.identification import pairs_needed, rate_for_fpir
from consentry.identity.index import IdentityIndex
from consentry.registry.signing import Envelope
from consentry.server import create_app, hash_admin_key
from tests.integration._labelled import labelled_set
from tests.integration._live import live_server
from tests.support.cli import Cli, assert_one_line_error, initialised

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
SHOWABLE = ["--fpir", "0.05", "--held-fpir", "0.2", "--gallery", "1", "--max-fnmr", "0.1"]


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str) -> Cli:
    runner = initialised(tmp_path / "home", sqlite_url)
    runner.ok("subject", "add", "Barack Obama")
    runner.ok("subject", "add", "Joe Biden")
    return runner


def _log_size(cli: Cli) -> int:
    with Registry.open(cli.home) as registry:
        return registry.log_size()


def test_too_small_a_set_is_refused_with_the_pairs_it_needs(cli: Cli, tmp_path: Path) -> None:
    folder = labelled_set(tmp_path / "labelled", 8)
    before = _log_size(cli)
    refused = cli("calibrate", str(folder), "--fpir", "0.01", "--apply")
    assert_one_line_error(refused, 2, "64 impostor probe-subject pairs")
    assert "at least 299" in refused.err  # pairs_needed(0.01)
    # at N = 34 the rate is 0.01 / 34: far more pairs
    at_34 = cli("calibrate", str(folder), "--fpir", "0.01", "--gallery", "34", "--apply")
    needed = pairs_needed(rate_for_fpir(0.01, 34))
    assert needed > 10_000
    assert_one_line_error(at_34, 2, f"at least {needed} ")
    assert _log_size(cli) == before  # nothing recorded
    for bad, fragment in [
        (["--fpir", "0"], "--fpir must be in (0, 1)"),
        (["--fpir", "1.5"], "--fpir must be in (0, 1)"),
        (["--fpir", "0.05", "--held-fpir", "0.01"], "below --fpir"),
        (["--fpir", "0.05", "--gallery", "0"], "--gallery must be a positive integer"),
        (["--gallery", "3"], "give --fpir too"),
    ]:
        assert_one_line_error(cli("calibrate", str(folder), *bad), 2, fragment)
    assert_one_line_error(cli("calibrate", "--undo", "--fpir", "0.05"), 2, "FOLDER")


def test_a_showable_budget_is_signed_followed_and_warned_past(cli: Cli, tmp_path: Path) -> None:
    folder = labelled_set(tmp_path / "labelled", 8)
    dry = cli("calibrate", str(folder), *SHOWABLE)
    assert dry.code == 0 and "review threshold" in dry.out and "FNIR" in dry.out
    assert "dry run" in dry.err
    out = cli.json("calibrate", str(folder), *SHOWABLE, "--apply")
    assert isinstance(out, dict) and out["applied"] is True
    assert (out["impostor_pairs"], out["genuine_probes"], out["gallery_size"]) == (64, 32, 1)
    assert out["review_threshold"] <= out["threshold"]
    assert out["rate_bound"] <= out["rate_target"] == pytest.approx(0.05)
    assert out["max_gallery"] == 1  # 0.0457 per subject: a second subject breaks 0.05
    assert out["fnir_missed"] <= 0.1

    with Registry.open(cli.home) as registry:
        leaf = json.loads(registry.entry(out["log_index"]).leaf_json)
        statement = Envelope.from_json(leaf["envelope"]).statement
        index = IdentityIndex(registry, "sface", get_engine("sface").dim, cache=False)
        index.refresh()
    assert statement["id"] == out["id"]
    assert statement["threshold"] == out["threshold"]
    assert statement["review_threshold"] == out["review_threshold"]
    assert (statement["fpir_target"], statement["gallery_size"], statement["max_gallery"]) == (
        0.05,
        1,
        1,
    )
    assert index.threshold == out["threshold"]  # the index follows the signed entry
    assert index.review_threshold == out["review_threshold"]
    assert "OK:" in cli.ok("log", "verify")

    first = cli("subject", "enroll", "Barack Obama", str(DATA / "obama.jpg"))
    assert first.code == 0 and "warning" not in first.err  # N = 1: within the budget
    with Registry.open(cli.home) as registry:
        app = create_app(registry, get_engine("sface"), hash_admin_key("csa_test-admin"))
        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            assert 'consentry_gallery_over_budget{engine="sface"} 0' in http.get("/metrics").text

            second = cli("subject", "enroll", "Joe Biden", str(DATA / "biden.jpg"))
            assert second.code == 0
            assert "warning: engine sface: 2 registered subjects exceed the 1" in second.err
            assert "consentry calibrate FOLDER --fpir 0.05" in second.err

            health = http.get("/healthz")
            assert health.status_code == 200
            body = health.json()
            assert body["status"] == "degraded" and len(body["warnings"]) == 1
            assert "2 registered subjects exceed the 1" in body["warnings"][0]
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            lines = set(metrics.text.splitlines())
            assert "consentry_registered_subjects 2" in lines
            assert 'consentry_gallery_subjects{engine="sface"} 2' in lines
            assert 'consentry_gallery_budget{engine="sface"} 1' in lines
            assert 'consentry_gallery_over_budget{engine="sface"} 1' in lines
            assert f"consentry_log_size {registry.log_size()}" in lines

            # erasing a subject brings N back within the budget
            cli.ok("subject", "erase", "Joe Biden", "--yes")
            assert http.get("/healthz").json() == {"status": "ok"}

    # undo restores the shipped default: no budget, no warning at any N
    cli.ok("calibrate", "--undo", "--apply")
    cli.ok("subject", "add", "Michael Collins")
    third = cli("subject", "enroll", "Michael Collins", str(DATA / "astronaut.jpg"))
    assert third.code == 0 and "warning: engine sface" not in third.err
