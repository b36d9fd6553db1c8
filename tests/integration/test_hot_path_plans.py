"""No full-table scan on the decision path (issue 12: O(log n) per decision).

Every SQL statement a prompt-only check, an allowed check, a checkpoint and an
inclusion proof send to SQLite is captured and re-planned with ``EXPLAIN QUERY
PLAN`` on the same parameters. Every ``SCAN`` must be of something bounded (a
VALUES list or constant row, a subquery over one, the operator keys); any other scan,
aliased or through an index, walks a table that grows with every decision (entries,
stored hashes, decisions, grants, revocations): SQLite 3.40 planned the stored-hash
lookup ``(level, idx) IN (...)``
that way, and the bench showed it only as a slow drift (10.4 ms at 10^3 entries,
72.7 ms at 10^5). The plan does not depend on the table's size (no ``ANALYZE``), so
a small log shows what a large one would do.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from consentry.gate import CheckRequest
from consentry.registry.store import Registry
from tests.support.worlds import new_registry, sface_gateway

# the only scans whose cost does not grow with the log: VALUES lists and constant
# rows (``v`` is the stored-hash lookup's VALUES alias), subqueries over them, and the
# operator keys (one row per rotation)
_BOUNDED_SCAN = re.compile(r"SCAN ((\d+ )?CONSTANT ROWS?|\(subquery-\d+\)|v|keys)$")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry, _ = new_registry(
        tmp_path / "home", f"sqlite:///{tmp_path}/r.db", ["Ada Lovelace", "Grace Hopper"]
    )
    registry.add_grantee("Studio")
    registry.grant("Ada Lovelace", "Studio", ["generate"])
    yield registry
    registry.close()


def _captured(registry: Registry) -> list[tuple[str, Any]]:
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, params))

    for engine in registry.db.engines:
        event.listen(engine, "before_cursor_execute", capture)
    return statements


def _scans(db_file: Path, statements: list[tuple[str, Any]]) -> list[str]:
    found = []
    with sqlite3.connect(db_file) as raw:
        for statement, params in statements:
            for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params or ()):
                detail = str(row[-1])
                if detail.startswith("SCAN") and not _BOUNDED_SCAN.match(detail):
                    found.append(f"{detail}  <-  {' '.join(statement.split())[:200]}")
    return found


def test_a_decision_and_its_proof_scan_no_table_that_grows_with_the_log(
    registry: Registry, tmp_path: Path
) -> None:
    gateway = sface_gateway(registry)
    for n in range(3):  # warm: caches filled, the follower caught up
        gateway.check(CheckRequest("Studio", "generate", prompt=f"a lighthouse {n}"))
    statements = _captured(registry)
    refused = gateway.check(CheckRequest("Studio", "generate", prompt="Grace Hopper at sea"))
    allowed = gateway.check(CheckRequest("Studio", "generate", prompt="Ada Lovelace at work"))
    note = registry.checkpoint()
    assert allowed.log_index is not None
    proof = registry.inclusion_proof(allowed.log_index, note)
    assert not refused.allowed and allowed.allowed and proof.hashes
    assert len(statements) > 5  # the capture saw the decision path
    assert _scans(tmp_path / "r.db", statements) == []
