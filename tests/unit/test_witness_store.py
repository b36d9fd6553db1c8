"""The witness state's per-decision read: parsed once, re-read whenever the file changes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from consentry.errors import ConfigError
from consentry.registry import checkpoint as cp
from consentry.registry.signing import SigningKey
from consentry.registry.witness import WitnessStore

ORIGIN = "consentry.registry/test"


def _note(key: SigningKey, size: int) -> str:
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    checkpoint = cp.Checkpoint(ORIGIN, size, bytes([size % 256]) * 32, moment)
    return cp.sign_checkpoint(checkpoint, "operator", key.private_key)


def test_latest_unchanged_follows_every_new_state_and_a_deleted_one(tmp_path: Path) -> None:
    store = WitnessStore(tmp_path)
    key = SigningKey.generate()
    assert store.latest_unchanged(ORIGIN) is None
    with store.locked(ORIGIN):
        store.advance(_note(key, 5))
    first = store.latest_unchanged(ORIGIN)
    assert first is not None and first.checkpoint.tree_size == 5
    assert store.latest_unchanged(ORIGIN) is first  # unchanged file: not parsed again
    with store.locked(ORIGIN):
        store.advance(_note(key, 9))
    second = store.latest_unchanged(ORIGIN)
    assert second is not None and second.checkpoint.tree_size == 9
    store.path_for(ORIGIN).unlink()
    assert store.latest_unchanged(ORIGIN) is None


def test_latest_unchanged_refuses_a_damaged_state_like_latest(tmp_path: Path) -> None:
    store = WitnessStore(tmp_path)
    store.logs_dir.mkdir(parents=True)
    store.path_for(ORIGIN).write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="damaged"):
        store.latest_unchanged(ORIGIN)
