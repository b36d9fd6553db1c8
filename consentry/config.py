"""The home folder: where the settings, the operator key and the SQLite file live.

Resolution order for the home: an explicit path, then ``CONSENTRY_HOME``, then
the per-user data folder. The database URL comes from an explicit value, then
``CONSENTRY_DB``, then the home's ``config.json``, then ``sqlite:///HOME/registry.db``.

Layout::

    HOME/config.json          {"db_url": ..., "origin": ...}
    HOME/keys/operator.key    current operator Ed25519 key (PKCS#8 PEM, 0600)
    HOME/keys/operator.pub    its public key (PEM), what offline verifiers need
    HOME/keys/master.key      32-byte master key wrapping subject data keys (0600)
    HOME/witness.checkpoint   the newest checkpoint this home has seen
    HOME/registry.db          the SQLite database (default store)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from consentry.errors import ConfigError

__all__ = ["Home", "resolve_db_url", "resolve_home"]


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
                f"no registry at {self.root}: run 'consentry init --home {self.root}' first"
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {self.config_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{self.config_file} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def write_config(self, values: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


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
            return url
    return home.default_db_url
