"""Hot reads on the DBAPI cursor (``consentry.registry.raw_sql``): the same rows as
through SQLAlchemy, in the caller's transaction, seen by statement listeners."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from consentry import Registry
from consentry.registry.raw_sql import RawStatement

_ENTRY = RawStatement("SELECT idx, kind FROM log_entries WHERE idx = :i OR idx = :i + :step")


def test_rows_equal_sqlalchemy_s_and_listeners_see_the_statement(studio_registry: Registry) -> None:
    registry = studio_registry
    seen: list[tuple[str, Any]] = []

    def listen(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(registry.db.single, "before_cursor_execute", listen)
    with registry.db.read_one() as connection:
        raw = _ENTRY.rows(connection, {"i": 0, "step": 1})
        through = connection.execute(
            text("SELECT idx, kind FROM log_entries WHERE idx = :i OR idx = :i + :step"),
            {"i": 0, "step": 1},
        ).all()
    assert raw == [tuple(row) for row in through] and [r[1] for r in raw] == ["key", "grantee"]
    assert seen[0][1] == {"i": 0, "step": 1}
    postgres = registry.db.is_postgres
    assert ("%(i)s" in seen[0][0]) is postgres and (":i" in seen[0][0]) is not postgres


def test_a_raw_read_runs_in_the_caller_s_transaction(studio_registry: Registry) -> None:
    registry = studio_registry
    size = registry.log_size()
    with registry.db.write() as session:
        session.connection().execute(
            text("INSERT INTO log_entries (idx, kind, record_id, leaf_json, leaf_hash, "
                 "created_at) VALUES (:i, 'x', 'x', '{}', 'x', 'x')"),
            {"i": size},
        )  # fmt: skip
        assert _ENTRY.first(session.connection(), {"i": size, "step": 0}) == (size, "x")
        session.rollback()
    with registry.db.read_one() as connection:
        assert _ENTRY.first(connection, {"i": size, "step": 0}) is None  # rolled back


@pytest.mark.parametrize("sql", ["SELECT 100 % 7", "SELECT CAST(1 AS TEXT)::text"])
def test_a_statement_the_rendering_could_change_is_refused(sql: str) -> None:
    with pytest.raises(ValueError, match="no '%' and no '::'"):
        RawStatement(sql)
