"""The home folder: where the settings, the operator key and the SQLite file live.

Resolution order for the home: an explicit path, then ``CONSENTRY_HOME``, then
the per-user data folder. The database URL comes from an explicit value, then
``CONSENTRY_DB``, then the home's ``config.json``, then ``sqlite:///HOME/registry.db``.

``config.json`` stores a SQLite file inside the home *relative to the home*
(``sqlite:///registry.db``), so a copied or moved home uses its own copy of the
database, never the original. A relative ``sqlite:///`` URL read from
``config.json`` is resolved against the home root; absolute URLs (homes made
before this rule, or a database outside the home) and PostgreSQL URLs are used as
they are. Explicit and ``CONSENTRY_DB`` URLs keep SQLAlchemy's meaning.

The witnessed checkpoint that defends against rollback is *not* kept here: see
:mod:`consentry.registry.witness` (a per-user folder, ``CONSENTRY_WITNESS_DIR``).

Layout::

    HOME/config.json          {"db_url": ..., "origin": ...}
    HOME/keys/operator.key    current operator Ed25519 key (PKCS#8 PEM, 0600)
    HOME/keys/operator.pub    its public key (PEM), what offline verifiers need
    HOME/keys/master.key      32-byte master key wrapping subject data keys (0600)
    HOME/witness.checkpoint   the newest checkpoint this home signed (the operator's
                              own copy: restored with the home, so no rollback defence)
    HOME/registry.db          the SQLite database (default store)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from consentry.errors import ConfigError
from consentry.fsutil import atomic_write

__all__ = ["WITNESS_DIR_ENV", "Home", "resolve_db_url", "resolve_home"]

# The witness folder's variable (read by ``consentry.registry.witness``); here so the
# CLI names it in ``--witness-dir`` without importing the witness code.
WITNESS_DIR_ENV = "CONSENTRY_WITNESS_DIR"

_SQLITE_PREFIX = "sqlite:///"


def resolve_home(home: Path | str | None = None) -> Path:
    """The home folder to use (not created here)."""
    if home is not None and str(home) != "":
        return Path(home).expanduser().resolve()
    env = os.environ.get("CONSENTRY_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("consentry", appauthor=False))


@dataclass(frozen=True)
class Home:
    """Paths inside one home folder."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def operator_key(self) -> Path:
        return self.keys_dir / "operator.key"

    @property
    def operator_public(self) -> Path:
        return self.keys_dir / "operator.pub"

    @property
    def master_key(self) -> Path:
        return self.keys_dir / "master.key"

    @property
    def witness_checkpoint(self) -> Path:
        return self.root / "witness.checkpoint"

    @property
    def default_db_url(self) -> str:
        return f"sqlite:///{self.root / 'registry.db'}"

    def exists(self) -> bool:
        return self.config_file.is_file()

    def read_config(self) -> dict[str, str]:
        try:
            data = json.loads(self.config_file.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no registry at {self.root}",
                hint=f"run 'consentry init --home {self.root}' first",
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {self.config_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_file} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def write_config(self, values: dict[str, str]) -> None:
        """Write ``config.json`` atomically; a SQLite file in the home is stored relative."""
        stored = dict(values)
        if "db_url" in stored:
            stored["db_url"] = self.portable_db_url(stored["db_url"])
        atomic_write(self.config_file, json.dumps(stored, indent=2, sort_keys=True) + "\n", 0o600)

    def portable_db_url(self, url: str) -> str:
        """``url`` as ``config.json`` stores it: a SQLite file inside the home becomes
        ``sqlite:///<path relative to the home>``; anything else is unchanged."""
        path, query = _sqlite_path(url)
        if path is None or not path.is_absolute():
            return url
        try:
            relative = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return url  # outside the home: a copy of the home shares it, as it should
        return f"{_SQLITE_PREFIX}{relative.as_posix()}{query}"

    def stored_db_url(self, url: str) -> str:
        """The URL a ``config.json`` value means: relative SQLite paths are in the home."""
        path, query = _sqlite_path(url)
        if path is None or path.is_absolute():
            return url
        return f"{_SQLITE_PREFIX}{self.root / path}{query}"


def _sqlite_path(url: str) -> tuple[Path | None, str]:
    """The file path and ``?query`` of a ``sqlite:///PATH`` URL; ``None`` for any other
    URL, an in-memory database or an empty path."""
    if not url.startswith(_SQLITE_PREFIX):
        return None, ""
    rest = url[len(_SQLITE_PREFIX) :]
    text, mark, query = rest.partition("?")
    if not text or text == ":memory:":
        return None, ""
    return Path(text), mark + query


def resolve_db_url(home: Home, explicit: str | None = None) -> str:
    """The database URL for ``home`` (see module docstring for the order)."""
    if explicit:
        return explicit
    env = os.environ.get("CONSENTRY_DB")
    if env:
        return env
    if home.exists():
        url = home.read_config().get("db_url")
        if url:
            return home.stored_db_url(url)
    return home.default_db_url
