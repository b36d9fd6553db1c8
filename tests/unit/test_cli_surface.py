"""The command line's surface: every option and argument explained, ``--version``,
and a start-up that loads no model library."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from typing import Any

import typer.main

import consentry
from consentry.cli.main import app


def _walk(command: Any, path: list[str], ctx: Any) -> list[tuple[list[str], Any]]:
    found: list[tuple[list[str], Any]] = [(path, command)]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            found += _walk(sub, [*path, name], type(ctx)(sub, parent=ctx, info_name=name))
    return found


def _commands() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(app)
    return _walk(root, ["consentry"], root.context_class(root, info_name="consentry"))


def test_every_command_option_and_argument_has_help() -> None:
    commands = _commands()
    assert len(commands) > 50  # the whole tree was walked, groups included
    missing = [
        f"{' '.join(path)} {param.name}"
        for path, command in commands
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    undocumented = [" ".join(path) for path, command in commands if not command.help]
    assert not missing, missing
    assert not undocumented, undocumented


def test_version_is_the_installed_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consentry.cli.main", "--version"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout == f"consentry {consentry.__version__}\n"
    assert consentry.__version__ == version("consentry")
    assert result.stderr == ""


def test_cli_start_up_loads_no_model_signing_or_index_library() -> None:
    code = (
        "import sys, consentry.cli.main\n"
        "heavy = ('torch', 'torchvision', 'diffusers', 'transformers', 'faiss', 'c2pa', 'cv2',\n"
        "         'dlib', 'fastapi', 'uvicorn', 'iscc_core', 'numpy', 'PIL', 'httpx',\n"
        "         'sqlmodel', 'sqlalchemy', 'cryptography', 'pydantic')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""


def test_help_runs_without_loading_heavy_libraries() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['consentry', 'generate', '--help']\n"
        "try:\n"
        "    runpy.run_module('consentry.cli.main', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', ','.join(m for m in ('torch', 'diffusers', 'faiss', 'c2pa', 'cv2')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "--steps" in result.stdout
    assert result.stdout.rstrip().endswith("LOADED")


def test_top_level_help_loads_no_database_or_crypto_library() -> None:
    """``python -m consentry --help`` (what a user types first) lists the commands
    without importing the store's SQLModel/SQLAlchemy or cryptography: those cost
    most of a second and no help text needs them."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['consentry', '--help']\n"
        "try:\n"
        "    runpy.run_module('consentry', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sqlmodel', 'sqlalchemy', 'cryptography', 'pydantic', 'torch', 'numpy')\n"
        "print('LOADED', ','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    for command in ("grantee", "subject", "generate", "serve", "witness"):
        assert command in result.stdout, command
    assert result.stdout.rstrip().endswith("LOADED"), result.stdout[-300:]


def test_python_dash_m_consentry_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consentry", "--version"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout == f"consentry {consentry.__version__}\n"
