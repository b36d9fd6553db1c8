"""``python -m consentry``: the ``consentry`` command (same entry point as the script)."""

from __future__ import annotations

from consentry.cli.main import run

if __name__ == "__main__":
    run()
