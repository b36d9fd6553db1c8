"""Limits from the law on grants, set per registry: a maximum duration, a review
date, and evidence of consent.

Licences for digital replicas are capped in the US NO FAKES drafts (10 years for
an adult, shorter for minors) and consent should be revisited; a registry sets
its own limits in its home's ``config.json`` (``consentry policy set``):

- ``grant_max_days``: a grant must end at most this many days after it starts (a
  grant with no end is refused);
- ``grant_review_days``: every grant carries a signed ``review_by`` date this many
  days after its start (``consentry grants --review-due`` lists those past it);
- ``grant_require_evidence``: ``true`` refuses a grant without the SHA-256 of the
  signed release (``--evidence FILE``).

Invariants
- :meth:`GrantPolicy.review_by` checks a grant's terms against the limits before
  anything is signed (at ``grant``, at ``--prepare`` and again at ``submit``) and
  returns the review date to sign into the grant; a violation is an
  :class:`~consentry.errors.InputError` naming the limit, and nothing is written.
- No limit is set unless configured: a registry made before these settings keeps
  working unchanged. Unknown or malformed values are a ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from consentry.config import Home
from consentry.errors import ConfigError, InputError
from consentry.registry.statements import format_time

__all__ = ["POLICY_KEYS", "GrantPolicy", "policy_of"]

POLICY_KEYS = ("grant_max_days", "grant_review_days", "grant_require_evidence")


def _days(values: dict[str, str], key: str) -> int | None:
    raw = values.get(key)
    if raw is None or raw == "":
        return None
    try:
        days = int(raw)
    except ValueError as exc:
        raise ConfigError(f"config.json {key} must be a whole number of days, not {raw!r}") from exc
    if not 1 <= days <= 36_500:
        raise ConfigError(f"config.json {key} must be between 1 and 36500 days, not {days}")
    return days


@dataclass(frozen=True)
class GrantPolicy:
    """A registry's limits on grants (None / False: no limit)."""

    max_days: int | None = None
    review_days: int | None = None
    require_evidence: bool = False

    @classmethod
    def from_config(cls, values: dict[str, str]) -> GrantPolicy:
        evidence = values.get("grant_require_evidence", "false").lower()
        if evidence not in ("true", "false"):
            raise ConfigError("config.json grant_require_evidence must be true or false")
        return cls(
            _days(values, "grant_max_days"), _days(values, "grant_review_days"), evidence == "true"
        )

    def as_config(self) -> dict[str, str]:
        return {
            "grant_max_days": "" if self.max_days is None else str(self.max_days),
            "grant_review_days": "" if self.review_days is None else str(self.review_days),
            "grant_require_evidence": "true" if self.require_evidence else "false",
        }

    def review_by(
        self, start: datetime, not_after: datetime | None, evidence_sha256: str | None
    ) -> str | None:
        """Check a grant's terms against the limits; the ``review_by`` time to sign
        into it (None without a review limit)."""
        if self.max_days is not None:
            limit = start + timedelta(days=self.max_days)
            if not_after is None:
                raise InputError(
                    f"this registry limits grants to {self.max_days} days: give an end",
                    # a bare --until date includes its whole day: the last one within
                    hint=f"--until {format_time(limit - timedelta(days=1))[:10]} at the latest",
                )
            if not_after > limit:
                raise InputError(
                    f"the grant would last beyond this registry's limit of {self.max_days} "
                    f"days (until {format_time(limit)} at the latest)"
                )
        if self.require_evidence and not evidence_sha256:
            raise InputError(
                "this registry requires evidence of consent for every grant",
                hint="--evidence FILE (the signed release; only its SHA-256 is kept)",
            )
        if self.review_days is None:
            return None
        return format_time(start + timedelta(days=self.review_days))


def policy_of(home: Home) -> GrantPolicy:
    """The policy in ``home``'s ``config.json`` (no limits for a home without one: a
    registry opened from a database URL alone)."""
    if not home.exists():
        return GrantPolicy()
    return GrantPolicy.from_config(home.read_config())
