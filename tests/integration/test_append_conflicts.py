"""An append whose row conflicts with a stored one: a DuplicateError, nothing
appended, and the registry keeps working (its inserts are sent pipelined on
PostgreSQL, so the error comes back at the pipeline's end, not at the statement)."""

from __future__ import annotations

import pytest

from consentry import Registry
from consentry.errors import DuplicateError
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision


def _refusal(registry: Registry) -> Decision:
    return record_decision(registry, "Studio", "generate", False, ["a test refusal"],
                           [], [], None, [], [])  # fmt: skip


def test_a_conflicting_row_appends_nothing_and_the_next_append_works(
    studio_registry: Registry,
) -> None:
    registry = studio_registry
    first = _refusal(registry)
    size = registry.log_size()
    replayed = Decision(**first.model_dump())  # the same primary key
    with (
        pytest.raises(DuplicateError, match="conflicts with an existing record"),
        registry.db.write() as session,
    ):
        registry.log.record_many(session, [replayed])
    assert registry.log_size() == size  # no entry, no stored hash, no row
    assert registry.verify_log().ok
    second = _refusal(registry)  # the connection and the stored tree are intact
    assert second.log_index == size and registry.log_size() == size + 1
    assert registry.verify_log().ok
