"""``python -m bench log``: decision cost against log size, stored hashes vs read-all.

What is measured, on one SQLite registry grown in place to each size:

* **decision cost**: ``record_decision`` (a refusal, so the consent follower is not
  part of it: that is the log's cost alone) + ``Registry.checkpoint()`` (signed,
  stored, both witness proofs) + ``Registry.inclusion_proof`` of the new entry;
  p50 and p95 over ``--log-reps`` decisions, and each part's p50.
* **baseline**, in the same run: the same ``record_decision`` plus what release
  0.1.0's checkpoint and proof did with the tree: read every leaf hash, build a
  ``MerkleTree``, root it and a witness prefix, read every leaf hash again and run
  ``merkle.inclusion_proof`` over them. It leaves out signing and storing the note
  and the witness fsyncs, so it is a lower bound of the old cost. Run where
  affordable (not above ``--log-baseline-max``).
* bytes on disk per entry (file size, and the stored-hash table's share from
  SQLite's ``dbstat``), proof size, and ``consentry log verify`` (a subprocess) at
  the largest size: entries/s and its peak RSS.

Big logs are built by a fast generator of **real** entries: each is a decision
statement signed by the operator key (``Envelope.sign``), its leaf is
``leaf_bytes`` and ``merkle.leaf_hash``, and rows, leaves and stored hashes
(``tiles.integrate``) go in with executemany, in chunks, under ``db.write()``.
``log verify`` checks every one of those signatures and stored hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench._common import console, note, percentile, table
from consentry.registry import merkle, tiles
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, LogEntry
from consentry.registry.signing import Envelope, SigningKey, canonical_json
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry, leaf_bytes

FULL_SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
_CHUNK = 5_000
_CLI = "from consentry.cli.main import run; run()"  # the ``consentry`` command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("log")
    group.add_argument("--log-reps", type=int, default=None, help="decisions per size")
    group.add_argument(
        "--log-baseline-max",
        type=int,
        default=None,
        help="largest size at which the read-all baseline runs (default 10^6, quick 10^4)",
    )


def _decision_rows(
    key: SigningKey, grantee_id: str, start: int, count: int, now: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bytes]]:
    rows, entries, hashes = [], [], []
    empty = canonical_json([]).decode()
    for index in range(start, start + count):
        row = Decision(
            id=f"dec_{index:020x}",
            grantee_id=grantee_id,
            purpose="generate",
            allowed=False,
            reasons_json=canonical_json([f"bench refusal {index}"]).decode(),
            grants_json=empty,
            subjects_json=empty,
            prior_sha256=None,
            inputs_json=canonical_json([f"{index:064x}"]).decode(),
            outputs_json=empty,
            created_at=now,
            log_index=index,
        )
        data = leaf_bytes("decision", row.id, Envelope.sign(statement_of(row), [key]))
        digest = merkle.leaf_hash(data)
        rows.append(row.model_dump())
        entries.append(
            {
                "idx": index,
                "kind": "decision",
                "record_id": row.id,
                "leaf_json": data.decode(),
                "leaf_hash": digest.hex(),
                "created_at": now,
            }
        )
        hashes.append(digest)
    return rows, entries, hashes


def grow(registry: Registry, key: SigningKey, grantee_id: str, target: int) -> float:
    """Append real signed decisions in bulk until the log has ``target`` entries;
    returns entries/s."""
    began, start = time.perf_counter(), registry.log_size()
    now = format_time(registry.now())
    while (size := registry.log_size()) < target:
        count = min(_CHUNK, target - size)
        rows, entries, hashes = _decision_rows(key, grantee_id, size, count, now)
        with registry.db.write() as session:
            session.execute(insert(Decision.__table__), rows)  # type: ignore[attr-defined]
            session.execute(insert(LogEntry.__table__), entries)  # type: ignore[attr-defined]
            tiles.integrate(session, size, hashes)
    registry.checkpoint()
    added = target - start
    return added / max(time.perf_counter() - began, 1e-9)


def _decide(registry: Registry, grantee_id: str, n: int) -> Decision:
    return record_decision(
        registry,
        grantee_id,
        "generate",
        False,
        [f"bench decision {n}"],
        [],
        [],
        None,
        [f"{n % (1 << 256):064x}"],
        [],
    )


def measure(registry: Registry, grantee_id: str, reps: int) -> dict[str, Any]:
    """p50/p95 of decision + checkpoint + proof, with each part's p50."""
    parts: dict[str, list[float]] = {"decision": [], "checkpoint": [], "proof": [], "total": []}
    proof_hashes = bundle = 0
    for n in range(reps):
        t0 = time.perf_counter()
        row = _decide(registry, grantee_id, n)
        t1 = time.perf_counter()
        note_text = registry.checkpoint()
        t2 = time.perf_counter()
        proof = registry.inclusion_proof(row.log_index, note_text)
        t3 = time.perf_counter()
        root = tiles_root(note_text)
        merkle.verify_inclusion(proof.leaf_hash, proof.index, proof.tree_size, proof.hashes, root)
        parts["decision"].append(t1 - t0)
        parts["checkpoint"].append(t2 - t1)
        parts["proof"].append(t3 - t2)
        parts["total"].append(t3 - t0)
        proof_hashes = len(proof.hashes)
        bundle = len(json.dumps(proof.to_json()))
    out = {f"{k}_p50_ms": 1000 * percentile(v, 50) for k, v in parts.items()}
    out["total_p95_ms"] = 1000 * percentile(parts["total"], 95)
    out["proof_hashes"] = proof_hashes
    out["proof_bytes"] = 32 * proof_hashes
    out["proof_bundle_json_bytes"] = bundle
    return out


def tiles_root(note_text: str) -> bytes:
    from consentry.registry import checkpoint as cp

    return cp.parse_checkpoint(note_text)[0].root_hash


def baseline(registry: Registry, grantee_id: str, reps: int) -> dict[str, Any]:
    """The 0.1.0 tree work (read all, recompute) after the same decision."""
    totals: list[float] = []
    for n in range(reps):
        t0 = time.perf_counter()
        row = _decide(registry, grantee_id, 10_000 + n)
        hashes = registry.leaf_hashes()
        tree = merkle.MerkleTree(hashes)
        tree.root  # noqa: B018  (the checkpoint's root)
        merkle.root_hash(hashes[: max(1, len(hashes) // 2)])  # the witness prefix root
        again = registry.leaf_hashes(len(hashes))
        merkle.inclusion_proof(again, row.log_index)
        totals.append(time.perf_counter() - t0)
    registry.checkpoint()
    return {
        "total_p50_ms": 1000 * percentile(totals, 50),
        "total_p95_ms": 1000 * percentile(totals, 95),
        "reps": reps,
    }


def disk(path: Path, size: int) -> dict[str, Any]:
    """File size per entry (after folding the WAL in), and the stored hashes' share."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            stored = conn.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%log_tree_hashes%'"
            ).fetchone()[0]
        except sqlite3.Error:  # dbstat not compiled in
            stored = None
    finally:
        conn.close()
    total = path.stat().st_size
    return {
        "file_bytes": total,
        "bytes_per_entry": total / size,
        "tree_hash_bytes_per_entry": None if stored is None else stored / size,
    }


def verify_cli(home: Path, witness: Path, size: int) -> dict[str, Any]:
    env = {**os.environ, "CONSENTRY_WITNESS_DIR": str(witness)}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "log", "verify", "--home", str(home), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ok = done.returncode == 0
    return {
        "entries": size,
        "wall_s": wall,
        "entries_per_s": size / wall,
        "ok": ok,
        "peak_rss_mb": peak_kb / 1024,
        "stderr_tail": done.stderr[-300:],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    reps = args.log_reps or (10 if quick else 30)
    base_max = args.log_baseline_max or (10_000 if quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    witness = work / "witness"
    os.environ["CONSENTRY_WITNESS_DIR"] = str(witness)
    registry = Registry.init(work / "home", None, witness_dir=witness)
    key = SigningKey.load(registry.home.operator_key)
    grantee, _ = registry.add_grantee("Bench Grantee")
    results: list[dict[str, Any]] = []
    rows = []
    for size in sizes:
        rate = grow(registry, key, grantee.id, size)
        console.print(f"[log] grown to {registry.log_size():,} entries ({rate:,.0f} entries/s)")
        _decide(registry, grantee.id, -1)  # warm (the first decision opens caches)
        registry.checkpoint()
        stored = measure(registry, grantee.id, reps)
        old_reps = 3 if size >= 1_000_000 else max(3, reps // 6)
        old = baseline(registry, grantee.id, old_reps) if size <= base_max else None
        result = {"size": size, "build_entries_per_s": rate, "stored": stored, "baseline": old}
        results.append(result)
        rows.append(
            [
                f"{size:,}",
                f"{stored['total_p50_ms']:.2f}",
                f"{stored['total_p95_ms']:.2f}",
                f"{stored['decision_p50_ms']:.2f}",
                f"{stored['checkpoint_p50_ms']:.2f}",
                f"{stored['proof_p50_ms']:.2f}",
                "-" if old is None else f"{old['total_p50_ms']:.1f}",
                "-" if old is None else f"{old['total_p50_ms'] / stored['total_p50_ms']:.1f}x",
                f"{stored['proof_bytes']}",
            ]
        )
    flat = results[-1]["stored"]["total_p50_ms"] / results[0]["stored"]["total_p50_ms"]
    db_path = Path(registry.db.url.removeprefix("sqlite:///"))
    size = registry.log_size()
    registry.close()
    space = disk(db_path, size)
    checked = verify_cli(work / "home", witness, size)
    table(
        "log: decision + checkpoint + inclusion proof (ms), stored hashes vs read-all",
        [
            "log size",
            "p50",
            "p95",
            "decision",
            "checkpoint",
            "proof",
            "old p50",
            "old/new",
            "proof B",
        ],
        rows,
        caption=(
            f"{reps} decisions per size (refusals: no consent follower). p50 at the largest size "
            f"is {flat:.2f}x the smallest (goal: within 1.3x). old = release 0.1.0's read-all-"
            "and-recompute tree work after the same decision (a lower bound of its cost).\n"
            f"disk: {space['bytes_per_entry']:.0f} bytes per entry in all"
            + (
                ""
                if space["tree_hash_bytes_per_entry"] is None
                else f", of which stored tree hashes {space['tree_hash_bytes_per_entry']:.0f}"
            )
            + f". log verify (CLI) at {size:,}: {checked['entries_per_s']:,.0f} entries/s, "
            f"peak RSS {checked['peak_rss_mb']:.0f} MB, ok={checked['ok']}."
        ),
    )
    note(f"work folder (delete when done): {work}")
    return {
        "sizes": results,
        "p50_ratio_largest_to_smallest": flat,
        "disk": space,
        "verify": checked,
        "reps": reps,
    }
