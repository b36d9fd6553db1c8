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
* **open**: ``Registry.open`` at each size (O(log n) stored hashes), against the
  open of the release before it, which also streamed every leaf hash against the
  stored leaf hashes (``old open``: the same open plus that scan, in the same run).
* bytes on disk per entry (file size, and the stored-hash table's share from
  SQLite's ``dbstat``), proof size, and ``consentry log verify`` (a subprocess) at
  the largest size: entries/s (its own report), CPU seconds, and the peak RSS of
  the verifier and of its signature workers (``ru_maxrss``, written by the
  subprocess at exit, so the bench's own workers do not count).

Big logs are built by a fast generator of **real** entries (``_Fast``): each is a
decision statement signed by the operator key over its own canonical payload; the
payload and leaf are templates made by ``statement_of`` and ``leaf_bytes`` once,
and the first entry of every chunk is rebuilt by that slow path and must be
byte-identical. ``--log-workers`` processes sign, this one inserts rows, leaves
and stored hashes (``tiles.integrate``) with executemany, one chunk per
transaction: memory is a few chunks at any size. ``log verify`` checks every one
of those signatures and stored hashes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlmodel import col, select

from bench._common import console, note, percentile, table
from consentry.registry import merkle, tiles
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, LogEntry, TreeHash
from consentry.registry.signing import Envelope, SigningKey, canonical_json, payload_type_for
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry, leaf_bytes

FULL_SIZES = (1_000, 100_000, 1_000_000)  # --log-sizes 1e3,1e5,1e7 for 10^7
QUICK_SIZES = (1_000, 10_000)
_CHUNK = 5_000
_CLI = "from consentry.cli.main import run; run()"  # the ``consentry`` command
# the same, writing at exit its own peak RSS (VmHWM: this image's, where ru_maxrss
# would keep the bench's from before exec) and its children's (the signature workers)
_CLI_RSS = (
    "import atexit, os, re, resource\n"
    "def _peak() -> None:\n"
    "    status = open('/proc/self/status').read()\n"
    "    own = int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
    "    with open(os.environ['BENCH_RSS_FILE'], 'w') as out:\n"
    "        out.write('%d %d' % (own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "atexit.register(_peak)\n" + _CLI
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("log")
    group.add_argument("--log-reps", type=int, default=None, help="decisions per size")
    group.add_argument(
        "--log-baseline-max",
        type=int,
        default=None,
        help="largest size at which the read-all baseline runs (default 10^6, quick 10^4)",
    )
    group.add_argument(
        "--log-sizes",
        type=lambda text: tuple(int(float(v)) for v in text.split(",")),
        default=None,
        help="comma-separated log sizes, ascending (default 1e3,1e5,1e6; quick 1e3,1e4)",
    )
    group.add_argument(
        "--log-workers",
        type=int,
        default=None,
        help="processes that sign generated entries (default: cores - 1)",
    )
    group.add_argument(
        "--log-verify-max",
        type=lambda text: int(float(text)),
        default=None,
        help="skip the final 'log verify' when the log is larger than this (default: never skip)",
    )


def _decision_row(grantee_id: str, index: int, now: str) -> Decision:
    empty = canonical_json([]).decode()
    return Decision(
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


def _decision_rows_slow(
    key: SigningKey, grantee_id: str, start: int, count: int, now: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bytes]]:
    """The registry's own path: a ``Decision`` row, ``statement_of``, ``Envelope.sign``,
    ``leaf_bytes`` (what the fast generator is checked against)."""
    rows, entries, hashes = [], [], []
    for index in range(start, start + count):
        row = _decision_row(grantee_id, index, now)
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


class _Fast:
    """Real signed decision entries at ~10x the registry's path: the canonical
    payload and leaf are templates built once by ``statement_of`` and ``leaf_bytes``
    (the varying fields are plain ASCII, so substitution keeps them canonical JCS);
    each entry still gets its own Ed25519 signature over its own payload. The first
    entry of every chunk is rebuilt by the slow path and must be byte-identical."""

    _ID, _REASON, _INPUT, _PAYLOAD, _SIG = "@ID@", "@REASON@", "@INPUT@", "@PAYLOAD@", "@SIG@"

    def __init__(self, key: SigningKey, grantee_id: str, now: str) -> None:
        self.key, self.grantee_id, self.now = key, grantee_id, now
        row = _decision_row(grantee_id, 0, now)
        row.id = self._ID
        row.reasons_json = canonical_json([self._REASON]).decode()
        row.inputs_json = canonical_json([self._INPUT]).decode()
        statement = statement_of(row)
        self.payload_type = payload_type_for(str(statement["type"]), int(statement["version"]))
        self.payload = canonical_json(statement).decode()
        leaf = {
            "type": "consentry.log-leaf",
            "version": 1,
            "kind": "decision",
            "id": self._ID,
            "envelope": {
                "payloadType": self.payload_type,
                "payload": self._PAYLOAD,
                "signatures": [{"keyid": key.key_id, "sig": self._SIG}],
            },
        }
        self.leaf = canonical_json(leaf).decode()
        self.row = row.model_dump()
        self.sign = key.private_key.sign
        self.prefix = b"DSSEv1 %d %s " % (len(self.payload_type), self.payload_type.encode())

    def rows(
        self, start: int, count: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bytes]]:
        rows, entries, hashes = [], [], []
        now, template, leaf_template = self.now, self.payload, self.leaf
        b64, sha = base64.b64encode, hashlib.sha256
        for index in range(start, start + count):
            record_id = f"dec_{index:020x}"
            reason, digest_in = f"bench refusal {index}", f"{index:064x}"
            payload = (
                template.replace(self._ID, record_id)
                .replace(self._REASON, reason)
                .replace(self._INPUT, digest_in)
                .encode()
            )
            signature = self.sign(self.prefix + b"%d %s" % (len(payload), payload))
            leaf = (
                leaf_template.replace(self._ID, record_id)
                .replace(self._PAYLOAD, b64(payload).decode())
                .replace(self._SIG, b64(signature).decode())
            )
            digest = sha(b"\x00" + leaf.encode()).digest()
            rows.append(
                {
                    **self.row,
                    "id": record_id,
                    "reasons_json": f'["{reason}"]',
                    "inputs_json": f'["{digest_in}"]',
                    "log_index": index,
                }
            )
            entries.append(
                {
                    "idx": index,
                    "kind": "decision",
                    "record_id": record_id,
                    "leaf_json": leaf,
                    "leaf_hash": digest.hex(),
                    "created_at": now,
                }
            )
            hashes.append(digest)
        slow = _decision_rows_slow(self.key, self.grantee_id, start, 1, now)
        if (slow[0][0], slow[1][0], slow[2][0]) != (rows[0], entries[0], hashes[0]):
            raise AssertionError(f"fast generator differs from the registry's path at {start}")
        return rows, entries, hashes


_WORKER: _Fast | None = None


def _worker_init(key_path: str, grantee_id: str, now: str) -> None:
    global _WORKER
    _WORKER = _Fast(SigningKey.load(Path(key_path)), grantee_id, now)


def _worker_rows(
    span: tuple[int, int],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bytes]]:
    assert _WORKER is not None
    return _WORKER.rows(*span)


def grow(
    registry: Registry, key: SigningKey, grantee_id: str, target: int, workers: int = 0
) -> float:
    """Append real signed decisions in bulk until the log has ``target`` entries;
    returns entries/s. Entries are made by ``workers`` processes (0: in this one)
    and inserted here, in index order, a chunk per transaction: memory is a few
    chunks, whatever ``target`` is."""
    began, start = time.perf_counter(), registry.log_size()
    now = format_time(registry.now())
    spans = [(i, min(_CHUNK, target - i)) for i in range(start, target, _CHUNK)]
    if workers > 0:
        context = multiprocessing.get_context("fork")
        with context.Pool(
            workers, _worker_init, (str(registry.home.operator_key), grantee_id, now)
        ) as pool:
            ahead: deque[tuple[int, AsyncResult[Any]]] = deque()
            for span in spans:  # at most 2 chunks per worker in flight: bounded memory
                ahead.append((span[0], pool.apply_async(_worker_rows, (span,))))
                if len(ahead) > 2 * workers:
                    size, result = ahead.popleft()
                    _insert(registry, size, result.get())
            while ahead:
                size, result = ahead.popleft()
                _insert(registry, size, result.get())
    else:
        fast = _Fast(key, grantee_id, now)
        for size, count in spans:
            _insert(registry, size, fast.rows(size, count))
    registry.checkpoint()
    added = target - start
    return added / max(time.perf_counter() - began, 1e-9)


def _insert(
    registry: Registry,
    size: int,
    made: tuple[list[dict[str, Any]], list[dict[str, Any]], list[bytes]],
) -> None:
    rows, entries, hashes = made
    with registry.db.write() as session:
        if tiles.log_size(session) != size:
            raise AssertionError(f"the log grew under the bench (expected {size} entries)")
        session.execute(insert(Decision.__table__), rows)  # type: ignore[attr-defined]
        session.execute(insert(LogEntry.__table__), entries)  # type: ignore[attr-defined]
        tiles.integrate(session, size, hashes)


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
    parts: dict[str, list[float]] = {
        "decision": [],
        "checkpoint": [],
        "proof": [],
        "total": [],
        "total_cpu": [],  # this process's CPU time: what load on a shared machine cannot inflate
    }
    proof_hashes = bundle = 0
    for n in range(reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        row = _decide(registry, grantee_id, n)
        t1 = time.perf_counter()
        note_text = registry.checkpoint()
        t2 = time.perf_counter()
        proof = registry.inclusion_proof(row.log_index, note_text)
        t3 = time.perf_counter()
        parts["total_cpu"].append(time.process_time() - c0)
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
        hashes = registry.log.leaf_hashes()
        tree = merkle.MerkleTree(hashes)
        tree.root  # noqa: B018  (the checkpoint's root)
        merkle.root_hash(hashes[: max(1, len(hashes) // 2)])  # the witness prefix root
        again = registry.log.leaf_hashes(len(hashes))
        merkle.inclusion_proof(again, row.log_index)
        totals.append(time.perf_counter() - t0)
    registry.checkpoint()
    return {
        "total_p50_ms": 1000 * percentile(totals, 50),
        "total_p95_ms": 1000 * percentile(totals, 95),
        "reps": reps,
    }


def _old_leaf_scan(registry: Registry) -> None:
    """What the previous release's open added: every leaf hash against its stored
    leaf hash, streaming in chunks (``tiles.first_leaf_mismatch``, removed)."""
    with registry.db.read() as session:
        size = tiles.log_size(session)
        for start in range(0, size, 8192):
            end = min(size, start + 8192)
            stored = {
                int(i): bytes(h)
                for i, h in session.execute(
                    select(TreeHash.idx, TreeHash.hash).where(
                        TreeHash.level == 0, col(TreeHash.idx) >= start, col(TreeHash.idx) < end
                    )
                )
            }
            rows = session.execute(
                select(LogEntry.idx, LogEntry.leaf_hash)
                .where(col(LogEntry.idx) >= start, col(LogEntry.idx) < end)
                .order_by(col(LogEntry.idx))
            )
            for idx, value in rows:
                if stored.get(int(idx)) != bytes.fromhex(value):
                    raise AssertionError(f"bench log: leaf {idx} differs from its stored hash")


def open_times(home: Path, reps: int = 3) -> dict[str, float]:
    """Median ms of ``Registry.open``, and of it plus the old full scan."""
    new, old = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        registry = Registry.open(home)
        t1 = time.perf_counter()
        _old_leaf_scan(registry)
        t2 = time.perf_counter()
        registry.close()
        new.append(t1 - t0)
        old.append(t2 - t0)
    return {"open_ms": 1000 * percentile(new, 50), "old_open_ms": 1000 * percentile(old, 50)}


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
    rss_file = home.parent / "verify-rss.txt"
    env = {**os.environ, "CONSENTRY_WITNESS_DIR": str(witness), "BENCH_RSS_FILE": str(rss_file)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CLI_RSS, "log", "verify", "--home", str(home), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:  # the verifier's own peak and its workers' (not the bench's other children)
        own_kb, workers_kb = (int(v) for v in rss_file.read_text().split())
    except (OSError, ValueError):
        own_kb = workers_kb = after.ru_maxrss
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    ok = done.returncode == 0
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    return {
        "entries": size,
        "wall_s": wall,  # with the interpreter's start and the open
        "verify_s": report.get("seconds"),
        "entries_per_s": report.get("entries_per_s") or size / wall,
        "ok": ok,
        "peak_rss_mb": own_kb / 1024,
        "workers_peak_rss_mb": workers_kb / 1024,
        "cpu_s": cpu,  # the verifier and its signature workers: load-independent
        "entries_per_cpu_s": size / max(cpu, 1e-9),
        "stderr_tail": done.stderr[-300:],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    sizes = args.log_sizes or (QUICK_SIZES if quick else FULL_SIZES)
    workers = (
        args.log_workers if args.log_workers is not None else max(0, (os.cpu_count() or 1) - 1)
    )
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
        rate = grow(registry, key, grantee.id, size, workers)
        console.print(f"[log] grown to {registry.log_size():,} entries ({rate:,.0f} entries/s)")
        opened = open_times(registry.home.root)
        _decide(registry, grantee.id, -1)  # warm (the first decision opens caches)
        registry.checkpoint()
        stored = measure(registry, grantee.id, reps)
        old_reps = 3 if size >= 1_000_000 else max(3, reps // 6)
        old = baseline(registry, grantee.id, old_reps) if size <= base_max else None
        result = {
            "size": size,
            "build_entries_per_s": rate,
            "stored": stored,
            "baseline": old,
            **opened,
        }
        results.append(result)
        console.print(  # one line per size as it finishes: a long run stopped early keeps these
            f"[log] {size:,}: p50 {stored['total_p50_ms']:.2f} ms (decision "
            f"{stored['decision_p50_ms']:.2f}, checkpoint {stored['checkpoint_p50_ms']:.2f}, "
            f"proof {stored['proof_p50_ms']:.2f}), p95 {stored['total_p95_ms']:.2f} ms, "
            f"CPU p50 {stored['total_cpu_p50_ms']:.2f} ms, "
            f"open {opened['open_ms']:.1f} ms, load {os.getloadavg()[0]:.1f}"
        )
        rows.append(
            [
                f"{size:,}",
                f"{stored['total_p50_ms']:.2f}",
                f"{stored['total_p95_ms']:.2f}",
                f"{stored['total_cpu_p50_ms']:.2f}",
                f"{stored['decision_p50_ms']:.2f}",
                f"{stored['checkpoint_p50_ms']:.2f}",
                f"{stored['proof_p50_ms']:.2f}",
                "-" if old is None else f"{old['total_p50_ms']:.1f}",
                "-" if old is None else f"{old['total_p50_ms'] / stored['total_p50_ms']:.1f}x",
                f"{stored['proof_bytes']}",
                f"{opened['open_ms']:.1f}",
                f"{opened['old_open_ms']:.1f}",
            ]
        )
    flat = results[-1]["stored"]["total_p50_ms"] / results[0]["stored"]["total_p50_ms"]
    flat_cpu = results[-1]["stored"]["total_cpu_p50_ms"] / results[0]["stored"]["total_cpu_p50_ms"]
    db_path = Path(registry.db.url.removeprefix("sqlite:///"))
    size = registry.log_size()
    registry.close()
    space = disk(db_path, size)
    verify_max = args.log_verify_max
    checked = (
        verify_cli(work / "home", witness, size)
        if verify_max is None or size <= verify_max
        else None
    )
    verified = (
        f"log verify skipped above {verify_max:,} entries (--log-verify-max)"
        if checked is None
        else f"log verify (CLI) at {size:,}: {checked['entries_per_s']:,.0f} entries/s, "
        f"({checked['entries_per_cpu_s']:,.0f} per CPU-second), "
        f"peak RSS {checked['peak_rss_mb']:.0f} MB (signature workers "
        f"{checked['workers_peak_rss_mb']:.0f} MB), ok={checked['ok']}"
    )
    table(
        "log: decision + checkpoint + inclusion proof (ms), stored hashes vs read-all",
        [
            "log size",
            "p50",
            "p95",
            "CPU p50",
            "decision",
            "checkpoint",
            "proof",
            "old p50",
            "old/new",
            "proof B",
            "open ms",
            "old open ms",
        ],
        rows,
        caption=(
            f"{reps} decisions per size (refusals: no consent follower). p50 at the largest size "
            f"is {flat:.2f}x the smallest (goal: within 1.3x); CPU p50 {flat_cpu:.2f}x. "
            "CPU = this process's CPU time (wall time includes fsync waits and, on a "
            "shared machine, other processes). old = release 0.1.0's read-all-"
            "and-recompute tree work after the same decision (a lower bound of its cost).\n"
            f"disk: {space['bytes_per_entry']:.0f} bytes per entry in all"
            + (
                ""
                if space["tree_hash_bytes_per_entry"] is None
                else f", of which stored tree hashes {space['tree_hash_bytes_per_entry']:.0f}"
            )
            + f". {verified}. "
            f"build: {results[-1]['build_entries_per_s']:,.0f} entries/s with {workers} "
            "signing workers. old open = open + the previous release's scan of every leaf."
        ),
    )
    note(f"work folder (delete when done): {work}")
    return {
        "sizes": results,
        "p50_ratio_largest_to_smallest": flat,
        "cpu_p50_ratio_largest_to_smallest": flat_cpu,
        "disk": space,
        "verify": checked,
        "reps": reps,
        "workers": workers,
        "load_average": os.getloadavg(),
    }
