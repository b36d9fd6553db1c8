"""What the service writes to its own log: the access log without query strings,
and the JSON decision lines on a stream when asked (``consentry serve --log-json``).

Invariants
- No API key reaches the server log through a request: keys travel in the
  ``Authorization`` header, which nothing here logs, and uvicorn's access log line
  has its query string replaced by ``?[redacted]`` (:class:`RedactQuery`), so a key
  a client put in a URL by mistake is not written either.
- The decision lines (:mod:`consentry.server.telemetry`) carry ids, counts and
  times only.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from consentry.server.telemetry import DECISION_LOGGER

__all__ = ["RedactQuery", "log_decisions_to", "redact_access_log"]

ACCESS_LOGGER = "uvicorn.access"
_HANDLER_NAME = "consentry-json-decisions"


def _without_query(target: object) -> object:
    if isinstance(target, str) and "?" in target:
        return target.split("?", 1)[0] + "?[redacted]"
    return target


class RedactQuery(logging.Filter):
    """Drop the query string of every path in an access-log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(a) for a in record.args)
        record.msg = _without_query(record.msg) if "?" in str(record.msg) else record.msg
        return True


def redact_access_log() -> None:
    """Install :class:`RedactQuery` on uvicorn's access logger (once per process;
    logger filters outlive uvicorn's logging set-up)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())


def log_decisions_to(stream: TextIO | None = None) -> None:
    """Write every decision's JSON line, alone on its line, to ``stream`` (stdout)."""
    logger = logging.getLogger(DECISION_LOGGER)
    logger.setLevel(logging.INFO)
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
