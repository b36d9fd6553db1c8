"""Options and output helpers shared by every command group.

Exit codes everywhere: 0 success, 1 a check failed or a request was refused,
2 a usage or input error. User errors print one line on stderr, no traceback
(``error: ...``, then ``hint: ...`` when there is advice).

With ``--json`` an error is JSON too, on stdout where the command's answer would
have been, and stderr stays empty: ``{"error": {"code", "message", "hint"}}``. The
code is the error class's own ``code`` (:attr:`consentry.errors.ConsentryError.code`),
the one the HTTP service answers for the same error (``NotFoundError`` ->
``not_found``, ``GrantRevokedError`` -> ``refused``; see :func:`error_code`), else
``failed`` for a check a command fails itself and ``interrupted`` for Ctrl-C;
``hint`` is null when there is none. Usage errors found by the option parser (an
unknown option, a missing argument) are always text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from consentry.errors import ConsentryError

if TYPE_CHECKING:
    from consentry.registry.store import Registry

__all__ = [
    "DbOpt",
    "DeviceOpt",
    "DtypeOpt",
    "HomeOpt",
    "JsonOpt",
    "emit_error",
    "emit_json",
    "error_code",
    "fail",
    "is_stdout",
    "json_errors",
    "json_report_target",
    "open_registry",
    "reset_json_errors",
    "terminal_progress",
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
# Set by the --json option's callback while the command line is parsed: errors of
# this run are then printed as JSON (see the module docstring).
_MODE = {"json": False}


def _remember_json(value: bool) -> bool:
    if value:
        _MODE["json"] = True
    return value


def is_stdout(path: Path | None) -> bool:
    """Whether a ``--json FILE`` option names stdout (``-``)."""
    return path is not None and str(path) == "-"


def json_report_target(value: Path | None) -> Path | None:
    """Callback of a ``--json FILE`` option (``audit``): ``-`` means the report goes to
    stdout, so this run's errors are JSON there too (as with the ``--json`` flag)."""
    if is_stdout(value):
        _MODE["json"] = True
    return value


def reset_json_errors() -> None:
    """Forget an earlier run's ``--json`` (the console entry point may run in-process
    more than once, as tests do)."""
    _MODE["json"] = False


def json_errors() -> bool:
    """Whether this run's command was given ``--json``."""
    return _MODE["json"]


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print JSON instead of text; an error too, as {error: {code, message, hint}}.",
        callback=_remember_json,
    ),
]
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


def error_code(exc: ConsentryError | None) -> str:
    """The JSON error code of ``exc``: its class's ``code`` (``failed`` for none)."""
    return "failed" if exc is None else exc.code


def emit_error(message: str, hint: str | None = None, code: str = "failed") -> None:
    """Print an error: JSON on stdout with ``--json``, else ``error:``/``hint:`` lines
    on stderr."""
    if json_errors():
        emit_json({"error": {"code": code, "message": message, "hint": hint}})
        return
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error (see :func:`emit_error`) and exit with ``code``."""
    emit_error(message)
    raise typer.Exit(code)


@contextmanager
def open_registry(home: Path | None, db: str | None) -> Iterator[Registry]:
    """The registry at ``home``/``db``, closed on leaving. The store (SQLModel,
    cryptography) is imported here, not with the CLI, so ``--help`` stays fast."""
    from consentry.registry.store import Registry

    registry = Registry.open(home, db)
    try:
        yield registry
    finally:
        registry.close()


@contextmanager
def terminal_progress(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A ``tick(done, total, item)`` drawing a transient progress bar on stderr, only
    when stderr is a terminal: piped or captured, stderr gets nothing from it."""
    if not sys.stderr.isatty():
        yield lambda done, total, item: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        transient=True,
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("", total=None)

        def tick(done: int, total: int, item: str) -> None:
            progress.update(task, completed=done, total=total, description=Path(item).name[:40])

        yield tick
