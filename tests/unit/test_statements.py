"""Time formatting and the config/home resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from consentry.config import Home, resolve_db_url, resolve_home
from consentry.errors import ConfigError, InputError
from consentry.registry.statements import format_time, parse_time


def test_format_time_is_utc_whole_seconds() -> None:
    moment = datetime(2026, 1, 2, 5, 4, 5, 999, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-01-02T03:04:05Z"


def test_format_time_refuses_naive() -> None:
    with pytest.raises(InputError):
        format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T10:00:00Z", datetime(2030, 1, 1, 10, tzinfo=UTC)),
        ("2030-01-01T12:00:00+02:00", datetime(2030, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_iso8601(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2030-13-01", ""])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(InputError):
        parse_time(text)


def test_home_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert resolve_home(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("CONSENTRY_HOME")
    assert "consentry" in str(resolve_home(None))


def test_db_url_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTRY_DB", raising=False)
    home = Home(tmp_path)
    assert resolve_db_url(home) == f"sqlite:///{tmp_path / 'registry.db'}"
    home.write_config({"db_url": "sqlite:////x.db"})
    assert resolve_db_url(home) == "sqlite:////x.db"
    monkeypatch.setenv("CONSENTRY_DB", "postgresql://env")
    assert resolve_db_url(home) == "postgresql://env"
    assert resolve_db_url(home, "postgresql://explicit") == "postgresql://explicit"


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with pytest.raises(ConfigError, match="no registry at") as raised:
        home.read_config()
    assert raised.value.hint is not None and "consentry init" in raised.value.hint
    home.config_file.write_text("{not json")
    with pytest.raises(ConfigError):
        home.read_config()
