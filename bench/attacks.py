"""The attack tally: every named attack of ``tests/security`` run, counted, tabulated.

``python -m bench attacks`` runs the tests marked ``@pytest.mark.attack`` (each
parametrised variant is one attack; a test passes only if the attack is refused
*and* the honest equivalent is allowed) and prints ``attacks tried / refused`` per
attack class. The goal is 100%: a row below its tried count names an open hole.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import note, table

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attack-workers", type=int, default=2,
        help="pytest-xdist workers for the attack run (default 2)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        tally_path = Path(scratch) / "tally.json"
        env = dict(os.environ, CONSENTRY_ATTACK_TALLY=str(tally_path))
        workers = getattr(args, "attack_workers", 2)
        command = [sys.executable, "-m", "pytest", "-q", "-m", "attack", "tests/security"]
        if workers > 1:
            command += ["-n", str(workers)]
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if not tally_path.exists():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            raise SystemExit(f"the attack run wrote no tally (pytest exit {proc.returncode})")
        tally = json.loads(tally_path.read_text())
    rows = [
        [name, c["tried"], c["refused"], c["tried"] - c["refused"], c["skipped"]]
        for name, c in sorted(tally["classes"].items())
    ]
    rows.append(["all attacks", tally["tried"], tally["refused"],
                 tally["tried"] - tally["refused"], sum(r[4] for r in rows)])
    table("Attacks on the gate (tests/security, marker 'attack')",
          ["attack", "tried", "refused", "got through", "skipped"], rows)
    share = 100.0 * tally["refused"] / max(tally["tried"], 1)
    note(f"attacks tried / refused: {tally['tried']} / {tally['refused']} ({share:.1f}%)")
    for nodeid in tally["failed"]:
        note(f"got through (or its honest case was refused): {nodeid}")
    return {"tally": tally, "refused_share": share, "pytest_exit": proc.returncode}
