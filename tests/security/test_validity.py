"""Expired and not-yet-valid grants: ``not_before <= t < not_after``, nothing else."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from consentry.errors import (
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    InputError,
)
from tests.security.conftest import T0, World

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def test_check_grant_raises_the_right_error_at_the_right_time(sqlite_world: World) -> None:
    w = sqlite_world
    start, end = T0 + DAY, T0 + 2 * DAY
    grant = w.registry.grant(w.alice.id, w.acme.id, ["generate"], not_before=start,
                             not_after=end, subject_key=w.alice_key)
    with pytest.raises(GrantNotYetValidError, match=grant.id):
        w.registry.check_grant(grant.id, at=T0)
    with pytest.raises(GrantNotYetValidError):
        w.registry.check_grant(grant.id, at=start - SECOND)
    assert w.registry.check_grant(grant.id, at=start).id == grant.id  # inclusive start
    assert w.registry.check_grant(grant.id, at=end - SECOND).id == grant.id
    with pytest.raises(GrantExpiredError, match=grant.id):
        w.registry.check_grant(grant.id, at=end)  # exclusive end
    with pytest.raises(GrantExpiredError):
        w.registry.check_grant(grant.id, at=end + 365 * DAY)


def test_not_after_equal_to_now_is_expired(sqlite_world: World) -> None:
    w = sqlite_world
    end = T0 + DAY
    grant = w.registry.grant(w.alice.id, w.acme.id, ["restore"], not_after=end,
                             subject_key=w.alice_key)
    w.clock.now = end - SECOND
    assert w.registry.check_grant(grant.id).id == grant.id
    w.clock.now = end
    with pytest.raises(GrantExpiredError):
        w.registry.check_grant(grant.id)  # the registry clock, no ``at``
    with pytest.raises(GrantExpiredError):
        w.registry.check_grant(grant.id, at=end)
    # the same instant written in another time zone is still "now"
    with pytest.raises(GrantExpiredError):
        w.registry.check_grant(grant.id, at=end.astimezone(timezone(timedelta(hours=2))))
    assert w.registry.grant_status(grant, None, end) == "expired"


def test_not_before_equal_to_now_is_valid_and_a_second_earlier_is_not(sqlite_world: World) -> None:
    w = sqlite_world
    start = T0 + DAY
    grant = w.registry.grant(w.alice.id, w.acme.id, ["restore"], not_before=start,
                             subject_key=w.alice_key)
    w.clock.now = start - SECOND
    with pytest.raises(GrantNotYetValidError):
        w.registry.check_grant(grant.id)
    w.clock.now = start
    assert w.registry.check_grant(grant.id).id == grant.id


def test_list_grants_active_only_excludes_expired_and_not_yet_valid(sqlite_world: World) -> None:
    w = sqlite_world
    reg = w.registry
    expired = reg.grant(w.alice.id, w.acme.id, ["restore"], not_after=T0 + DAY,
                        subject_key=w.alice_key)
    ending_now = reg.grant(w.alice.id, w.acme.id, ["restore"], not_after=T0 + 2 * DAY,
                           subject_key=w.alice_key)
    future = reg.grant(w.alice.id, w.acme.id, ["train"], not_before=T0 + 3 * DAY,
                       subject_key=w.alice_key)
    open_ended = reg.grant(w.alice.id, w.acme.id, ["train"], subject_key=w.alice_key)
    now = T0 + 2 * DAY
    w.clock.now = now
    statuses = {g.id: s for g, s in reg.list_grants(at=now)}
    assert statuses[expired.id] == "expired"
    assert statuses[ending_now.id] == "expired"
    assert statuses[future.id] == "not-yet-valid"
    assert statuses[open_ended.id] == "active"
    assert statuses[w.grant_r.id] == "revoked"
    active = {g.id for g, _ in reg.list_grants(active_only=True, at=now)}
    assert active == {open_ended.id, w.grant_a.id}
    assert {g.id for g, _ in reg.list_grants(active_only=True)} == active  # clock = now
    assert {g.id for g, _ in reg.list_grants(active_only=True, at=T0 + 3 * DAY)} == {
        open_ended.id, future.id, w.grant_a.id}


def test_revoked_grant_is_refused_at_every_time(sqlite_world: World) -> None:
    w = sqlite_world
    for moment in (T0, T0 + DAY, T0 + 29 * DAY):
        with pytest.raises(GrantRevokedError, match=w.grant_r.id):
            w.registry.check_grant(w.grant_r.id, at=moment)


def test_grant_that_ends_when_it_starts_is_refused(sqlite_world: World) -> None:
    w = sqlite_world
    size = w.registry.log_size()
    with pytest.raises(InputError, match="end before it starts"):
        w.registry.grant(w.alice.id, w.acme.id, ["restore"], not_before=T0 + DAY,
                         not_after=T0 + DAY, subject_key=w.alice_key)
    assert w.registry.log_size() == size
