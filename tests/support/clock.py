"""A clock the test sets: registries take ``clock=`` (a callable returning an aware
datetime), so a test moves time forward (expiry, sign-by, review windows) by
assigning ``clock.now``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["T0", "Clock"]

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock; starts at ``start`` (default :data:`T0`)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now
