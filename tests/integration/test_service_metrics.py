"""``GET /metrics`` from prometheus-client, and the JSON decision log, on a live
service: decisions counted by outcome and purpose, time per gate stage, checkpoint
age and index size; one JSON line per logged decision with ids only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consentry.faces.engines import get_engine
from consentry.generation.tiny import build_tiny_pipeline
from consentry.registry.store import Registry
from consentry.server import create_app, hash_admin_key
from consentry.server.telemetry import DECISION_LOGGER
from tests.integration._live import live_server
from tests.support.faces import PHOTOS
from tests.support.worlds import OBAMA, new_registry

ADMIN_KEY = "csa_metrics-admin-key"


@dataclass
class Service:
    registry: Registry
    base: str
    other: str
    key: str


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("metrics")
    model = build_tiny_pipeline(root / "model")
    registry, _ = new_registry(root / "home", None, [OBAMA], pki=True)
    _, key = registry.add_grantee("Studio")
    registry.checkpoint()
    engine = get_engine("sface")
    digest = hash_admin_key(ADMIN_KEY)
    app = create_app(registry, engine, digest, model_dir=model)
    other = create_app(registry, engine, digest)  # a second app in the same process
    try:
        with live_server(app) as base, live_server(other) as other_base:
            yield Service(registry, base, other_base, key)
    finally:
        registry.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
            **labels: str) -> float:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_decisions_stages_and_gauges_are_counted(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"Authorization": f"Bearer {service.key}"}
    with httpx.Client(base_url=service.base, timeout=120) as http:
        before = _samples(http.get("/metrics").text)
        assert (
            _metric(before, "consentry_decisions_total", outcome="allowed", purpose="generate") == 0
        )
        with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
            refused = http.post("/v1/check", headers=auth, data={"purpose": "generate",
                                "prompt": "Barack Obama on a beach"})  # fmt: skip
            job = {"prompt": "a quiet landscape", "steps": "3", "size": "64"}
            made = http.post("/v1/generate", headers=auth, data=job)
            looked = http.post(
                "/v1/check",
                headers=auth,
                data={"purpose": "restore"},
                files=[("images", ("o.jpg", (PHOTOS / "obama2.jpg").read_bytes(), "image/jpeg"))],
            )
        after_response = http.get("/metrics")
    assert refused.status_code == 200 and refused.json()["allowed"] is False, refused.text
    assert made.status_code == 200 and made.json()["allowed"] is True, made.text
    assert looked.status_code == 200 and looked.json()["allowed"] is False, looked.text
    text = after_response.text
    assert after_response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert f"consentry_log_size {service.registry.log_size()}" in text.splitlines()
    assert "consentry_registered_subjects 1" in text.splitlines()  # the hand-written gauges
    after = _samples(text)
    assert _metric(after, "consentry_decisions_total", outcome="refused", purpose="generate") == 1
    assert _metric(after, "consentry_decisions_total", outcome="allowed", purpose="generate") == 1
    assert _metric(after, "consentry_decisions_total", outcome="refused", purpose="restore") == 1
    for stage, count in {"pre_check": 3, "log_append": 3, "backend": 1, "post_check": 1,
                         "sign": 1}.items():  # fmt: skip
        assert _metric(after, "consentry_stage_seconds_count", stage=stage) == count, stage
        assert _metric(after, "consentry_stage_seconds_sum", stage=stage) > 0, stage
    assert _metric(after, "consentry_decision_seconds_count") == 3
    assert 0 <= _metric(after, "consentry_checkpoint_age_seconds") < 3600
    assert _metric(after, "consentry_index_size", engine="sface") >= 1

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == DECISION_LOGGER]
    assert [line["outcome"] for line in lines] == ["refused", "allowed", "refused"]
    for line, receipt in zip(lines, (refused.json(), made.json(), looked.json()), strict=True):
        assert line["id"] == receipt["decision"] and line["log_index"] == receipt["log_index"]
        assert set(line) == {"event", "id", "log_index", "outcome", "purpose", "grantee",
                             "subjects", "grants", "duration_ms"}  # fmt: skip
        assert line["duration_ms"] > 0
    raw = "\n".join(r.getMessage() for r in caplog.records if r.name == DECISION_LOGGER)
    assert "Obama" not in raw and "landscape" not in raw and service.key not in raw
    assert lines[2]["subjects"]  # the face in the photo is named by id only


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "consentry_decisions_total")


def test_each_app_counts_its_own_decisions(service: Service) -> None:
    auth = {"Authorization": f"Bearer {service.key}"}
    with httpx.Client(timeout=60) as http:
        main_before = _total(_samples(http.get(f"{service.base}/metrics").text))
        first = _total(_samples(http.get(f"{service.other}/metrics").text))
        check = http.post(f"{service.other}/v1/check", headers=auth, data={"purpose": "generate"})
        assert check.status_code == 200, check.text
        second = _total(_samples(http.get(f"{service.other}/metrics").text))
        main_after = _total(_samples(http.get(f"{service.base}/metrics").text))
    assert second == first + 1
    assert main_after == main_before  # a per-app registry: the other app's decision is not here
