"""Hot read statements run on the DBAPI cursor, without SQLAlchemy's execution layer.

A gate check reads a handful of small rows (the log's tail, a stored hash, a leaf
hash, a grantee row); through SQLAlchemy each statement cost 40 to 70 us of Python
on top of the driver (execution context, result metadata built from the cursor's
description for a text statement, row objects), measured here: a stored-hash
lookup 45 us on SQLite and 131 us on PostgreSQL through SQLAlchemy, 8.5 and 60 us
on the cursor.

Invariants
- A :class:`RawStatement` runs on the DBAPI connection of the SQLAlchemy
  ``Connection`` it is given, so inside that connection's transaction (or, on the
  one-statement engine, outside any), exactly as ``connection.execute`` would.
- Its SQL is written once with ``:name`` parameters (SQLite's style) and rendered
  for psycopg (``%(name)s``) at construction; it holds no ``%`` and no ``::``.
- It fires the engine's ``before_cursor_execute`` listeners with the SQL and the
  parameters it runs, so anything that watches statements (the hot-path plan test,
  statement counters) still sees it.
- Read statements only: rows come back as plain tuples, in the SQL's column order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

__all__ = ["RawStatement"]

_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


class RawStatement:
    """One read statement for both dialects (see the module doc)."""

    __slots__ = ("_postgres", "sql")

    def __init__(self, sql: str) -> None:
        if "%" in sql or "::" in sql:
            raise ValueError("a raw statement holds no '%' and no '::'")
        self.sql = sql  # SQLite (named ``:name``)
        self._postgres = _PARAMETER.sub(r"%(\1)s", sql)  # psycopg (``%(name)s``)

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns on ``connection``, as tuples."""
        sql = self._postgres if connection.dialect.name == "postgresql" else self.sql
        cursor = connection.connection.cursor()
        try:
            connection.dispatch.before_cursor_execute(connection, cursor, sql, params, None, False)
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None."""
        found = self.rows(connection, params)
        return found[0] if found else None
