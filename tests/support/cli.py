"""The ``consentry`` command run as a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cli", "Result", "assert_one_line_error", "initialised"]


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    home: Path
    db_url: str | None = None

    def __call__(self, *args: str, home: bool = True, cwd: Path | None = None) -> Result:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONSENTRY_") or k in ("CONSENTRY_DEVICE", "CONSENTRY_WITNESS_DIR")
        }
        argv = [sys.executable, "-m", "consentry.cli.main", *args]
        if home:
            env["CONSENTRY_HOME"] = str(self.home)
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=120, cwd=cwd
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.code == 0, result.err
        return result.out

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))


def initialised(home: Path, db_url: str) -> Cli:
    """A CLI over a registry just created by ``consentry init`` at ``home``."""
    runner = Cli(home, db_url)
    runner.ok("init", "--home", str(runner.home), "--db", db_url)
    return runner


def assert_one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.code == code, (result.out, result.err)
    assert "Traceback" not in result.err
    assert fragment in result.err
