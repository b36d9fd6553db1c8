"""The attack tally, a pytest plugin registered by ``tests/conftest.py`` (so the
controller of an xdist run loads it too, whatever paths are given)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Every test marked ``@pytest.mark.attack("name")`` is one attack tried (each
# parametrised variant counts once); it passes only if the attack was refused
# *and* the honest equivalent was allowed. The terminal summary prints the tally
# (also under xdist: the attack name travels in the report's user_properties), and
# ``CONSENTRY_ATTACK_TALLY=FILE`` writes it as JSON (``python -m bench attacks``).

_TALLY: dict[str, dict[str, int]] = {}
_GOT_THROUGH: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("attack")
    if marker is not None:
        item.user_properties.append(("attack", str(marker.args[0])))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    attack = dict(report.user_properties).get("attack")
    if attack is None:
        return
    counts = _TALLY.setdefault(str(attack), {"tried": 0, "refused": 0, "skipped": 0})
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            counts["skipped"] += 1
        else:
            counts["tried"] += 1
            if report.passed:
                counts["refused"] += 1
            else:
                _GOT_THROUGH.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLY:
        return
    tried = sum(c["tried"] for c in _TALLY.values())
    refused = sum(c["refused"] for c in _TALLY.values())
    write = terminalreporter.write_line
    terminalreporter.section("attack tally")
    for name in sorted(_TALLY):
        c = _TALLY[name]
        skipped = f" ({c['skipped']} skipped)" if c["skipped"] else ""
        write(f"{c['refused']:4d} / {c['tried']:<4d} {name}{skipped}")
    write(f"attacks tried / refused: {tried} / {refused} ({100.0 * refused / max(tried, 1):.1f}%)")
    for nodeid in _GOT_THROUGH:
        write(f"GOT THROUGH (or honest case broken): {nodeid}")
    target = os.environ.get("CONSENTRY_ATTACK_TALLY")
    if target:
        Path(target).write_text(
            json.dumps(
                {"tried": tried, "refused": refused, "classes": _TALLY, "failed": _GOT_THROUGH},
                indent=2,
            )
        )
