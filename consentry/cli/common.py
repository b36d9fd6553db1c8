"""Options and output helpers shared by every command group.

Exit codes everywhere: 0 success, 1 a check failed or a request was refused,
2 a usage or input error. User errors print one line on stderr, no traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from consentry.registry.store import Registry

__all__ = [
    "DbOpt",
    "DeviceOpt",
    "DtypeOpt",
    "HomeOpt",
    "JsonOpt",
    "emit_json",
    "fail",
    "open_registry",
]

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="CONSENTRY_HOME",
        help="Registry home folder (default: CONSENTRY_HOME, else a per-user data folder).",
        show_default=False,
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="CONSENTRY_DB",
        help="Database URL: sqlite:///PATH or postgresql://... (default: the home's setting).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        envvar="CONSENTRY_DEVICE",
        help="Where diffusers runs: auto (a CUDA GPU if present, else cpu), cpu, cuda, cuda:N.",
        show_default=False,
    ),
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        envvar="CONSENTRY_DTYPE",
        help="auto (float16 on a GPU, float32 on cpu), float32, bfloat16, float16 (GPU only).",
        show_default=False,
    ),
]


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def open_registry(home: Path | None, db: str | None) -> Iterator[Registry]:
    registry = Registry.open(home, db)
    try:
        yield registry
    finally:
        registry.close()
