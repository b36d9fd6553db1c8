"""A copied home uses its own database: config.json stores SQLite paths relative to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from consentry import Registry
from consentry.config import Home, resolve_db_url


def test_copied_home_uses_its_own_database(tmp_path: Path) -> None:
    original, copy = tmp_path / "original", tmp_path / "copy"
    with Registry.init(original) as registry:
        registry.add_subject("Ada Example")
        registry.checkpoint()
    config = json.loads((original / "config.json").read_text())
    assert config["db_url"] == "sqlite:///registry.db"
    shutil.copytree(original, copy)
    # the copy is a fork of the same log: a witness folder follows one history only
    with Registry.open(copy, witness_dir=tmp_path / "copy-witness") as registry:
        assert Path(registry.db.url.removeprefix("sqlite:///")) == copy / "registry.db"
        registry.add_subject("Only In The Copy")
        registry.checkpoint()
        assert {s.display_name for s in registry.list_subjects()} == {
            "Ada Example",
            "Only In The Copy",
        }
    with Registry.open(original) as registry:
        assert [s.display_name for s in registry.list_subjects()] == ["Ada Example"]
        assert registry.verify_log().ok


def test_old_homes_with_absolute_urls_still_open(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Registry.init(home) as registry:
        registry.add_subject("Ada Example")
    absolute = f"sqlite:///{home / 'registry.db'}"
    config = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(json.dumps({**config, "db_url": absolute}))
    assert resolve_db_url(Home(home)) == absolute
    with Registry.open(home) as registry:
        assert [s.display_name for s in registry.list_subjects()] == ["Ada Example"]


def test_only_sqlite_files_inside_the_home_become_relative(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    inside = f"sqlite:///{home.root / 'db' / 'r.db'}"
    outside = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    postgres = "postgresql://user:secret@db.example/consentry"
    assert home.portable_db_url(inside) == "sqlite:///db/r.db"
    assert home.stored_db_url("sqlite:///db/r.db") == inside
    assert home.portable_db_url(outside) == outside
    assert home.portable_db_url(postgres) == postgres == home.stored_db_url(postgres)
    assert home.portable_db_url("sqlite://") == "sqlite://"
