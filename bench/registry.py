"""``python -m bench registry``: grants/s, ``log verify`` time, proof sizes and times.

1. Grants per second end to end (``Registry.grant``: two read sessions, sign,
   log append, commit; one transaction per grant) on SQLite (WAL, file in a temp
   dir) and PostgreSQL (``tests.pgserver.ThrowawayPostgres``), against the
   baseline *plain INSERTs of the same rows*: pre-built, unsigned Grant rows
   inserted one per transaction with SQLAlchemy core ``insert`` + commit into a
   second database opened with the same engine settings (``Database.connect``),
   no signing, no log. Ours and the baseline run in interleaved rounds so that
   load from other processes hits both alike.
2. ``Registry.verify_log()`` on SQLite at 10k and 100k entries (see
   ``build_log`` for how the log is built).
3. Inclusion and consistency proofs at 1k, 10k and 100k entries: size against
   the RFC 9162 bound, generation time, offline verification time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import resource
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import SQLModel, select

from bench import registry_whatif as whatif
from bench._common import (
    Timing,
    console,
    load_average,
    note,
    percentile,
    profiled,
    timed,
    top_functions,
)
from bench.registry_profile import breakdown, grant_breakdown, verify_breakdown
from bench.registry_report import SQLITE_TARGET_GPS, VERIFY_TARGET_N, VERIFY_TARGET_S, report
from consentry.registry import merkle
from consentry.registry.db import Database
from consentry.registry.models import Grant, Grantee, LogEntry, Subject
from consentry.registry.offline import verify_consistency_bundle, verify_inclusion_bundle
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    load_public_key,
)
from consentry.registry.statements import format_time, statement_of
from consentry.registry.store import Registry, leaf_bytes

SEED_ENTRIES = 3  # genesis key, subject, grantee


@dataclass(frozen=True)
class Sizes:
    grants: int  # timed grants per backend (and baseline rows)
    warmup: int  # untimed grants (and baseline rows) first
    rounds: int  # ours and baseline alternate in this many rounds
    log_sizes: tuple[int, ...]  # verify_log is timed when the log has each size
    proof_sizes: tuple[int, ...]  # proofs against the checkpoint of each size
    append_prefix: int  # the first entries go through Registry.append (formerly _append)
    chunk: int  # entries per write transaction when building the log
    proof_indexes: int  # leaf indexes timed per size
    verify_repeat: int  # offline verifications timed per proof
    profile_grants: int  # grants under cProfile with --profile


FULL = Sizes(2000, 100, 4, (10_000, 100_000), (1_000, 10_000, 100_000), 1000, 5000, 3, 200, 300)
QUICK = Sizes(300, 30, 3, (2_000, 10_000), (1_000, 2_000, 10_000), 300, 2000, 3, 50, 150)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry")
    group.add_argument("--no-postgres", action="store_true",
                       help="registry: skip the PostgreSQL grant run")
    group.add_argument("--grants", type=int, default=None,
                       help="registry: timed grants per backend (default 2000, quick 300)")


# ------------------------------------------------------------------ rows
def _columns(row: SQLModel) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}  # type: ignore[attr-defined]


def _grant_row(key_id: str, subject_id: str, grantee_id: str, until: datetime,
               now: datetime) -> Grant:
    """A Grant row with the values ``Registry.grant(s, g, ["restore"], not_after=until)``
    gives it (``log_index`` still -1)."""
    stamp = format_time(now)
    return Grant(
        id=f"grt_{secrets.token_hex(10)}",
        subject_id=subject_id,
        grantee_id=grantee_id,
        purposes_json=json.dumps(["restore"]),
        priors_json=json.dumps([]),
        not_before=stamp,
        not_after=format_time(until),
        constraints_json=canonical_json({}).decode(),
        evidence_sha256=None,
        issuer_key_id=key_id,
        subject_key_id=None,
        created_at=stamp,
        log_index=-1,
    )


def _seed(registry: Registry) -> tuple[Subject, Grantee, datetime]:
    subject = registry.add_subject("Bench Subject", aliases=["bench"])
    grantee, _api_key = registry.add_grantee("Bench Grantee")
    return subject, grantee, registry.now() + timedelta(days=365)


def _peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# ------------------------------------------------------------------ 1. grants/s
def grant_throughput(label: str, url: str, baseline_url: str, home: Path, sizes: Sizes,
                     profile_dir: Path | None) -> dict[str, Any]:
    registry = Registry.init(home, url)
    baseline = Database.connect(baseline_url)
    try:
        subject, grantee, until = _seed(registry)
        baseline.create_schema()
        with baseline.writer.begin() as conn:
            conn.execute(insert(Subject.__table__), _columns(subject))  # type: ignore[attr-defined]
            conn.execute(insert(Grantee.__table__), _columns(grantee))  # type: ignore[attr-defined]
        key_id = registry.key_id
        rows = [
            _columns(_grant_row(key_id, subject.id, grantee.id, until, registry.now()))
            for _ in range(sizes.warmup + sizes.grants)
        ]
        for i, row in enumerate(rows):
            row["log_index"] = SEED_ENTRIES + i
        grant_insert = insert(Grant.__table__)  # type: ignore[attr-defined]

        def ours(count: int, latencies: list[float]) -> None:
            for _ in range(count):
                began = time.perf_counter()
                registry.grant(subject.id, grantee.id, ["restore"], not_after=until)
                latencies.append(time.perf_counter() - began)

        def plain(batch: list[dict[str, Any]], latencies: list[float]) -> None:
            for row in batch:
                began = time.perf_counter()
                with baseline.writer.begin() as conn:
                    conn.execute(grant_insert, row)
                latencies.append(time.perf_counter() - began)

        ours(sizes.warmup, [])
        plain(rows[: sizes.warmup], [])
        timed_rows = rows[sizes.warmup:]
        ours_t, base_t = Timing(), Timing()
        ours_lat: list[float] = []
        base_lat: list[float] = []
        bounds = [round(k * sizes.grants / sizes.rounds) for k in range(sizes.rounds + 1)]
        for lo, hi in itertools.pairwise(bounds):
            with timed() as t:
                ours(hi - lo, ours_lat)
            ours_t += t
            with timed() as t:
                plain(timed_rows[lo:hi], base_lat)
            base_t += t

        expected = SEED_ENTRIES + sizes.warmup + sizes.grants
        with baseline.read() as session:
            base_count = session.exec(select(func.count()).select_from(Grant)).one()
        sanity = {
            "log_size": registry.log_size(),
            "log_size_expected": expected,
            "baseline_rows": int(base_count),
            "baseline_rows_expected": sizes.warmup + sizes.grants,
        }
        if sanity["log_size"] != expected or base_count != sizes.warmup + sizes.grants:
            raise RuntimeError(f"{label}: row counts are off: {sanity}")

        result: dict[str, Any] = {
            "backend": label,
            "n": sizes.grants,
            "warmup": sizes.warmup,
            "rounds": sizes.rounds,
            "ours": _side(sizes.grants, ours_t, ours_lat),
            "baseline": _side(sizes.grants, base_t, base_lat),
            "sanity": sanity,
        }
        result["ratio_baseline_over_ours"] = (
            result["baseline"]["per_s"] / result["ours"]["per_s"]
        )
        if profile_dir is not None:
            note(f"      {label}: profiling {sizes.profile_grants} more grants ...")
            result["profile"] = _profile_grants(
                label, registry, subject.id, grantee.id, until, sizes.profile_grants, profile_dir
            )
            if not registry.db.is_postgres:
                note(f"      {label}: timing each step of a grant ...")
                result["components"] = whatif.grant_components(
                    registry, subject.id, grantee.id, until, min(100, sizes.grants))
                note(f"      {label}: what-if prototype (one transaction, core SQL) ...")
                result["whatif_lean"] = _whatif_lean(registry, subject.id, grantee.id, until,
                                                     sizes)
        note(f"      {label}: ours {result['ours']['per_s']:.0f} grants/s, "
             f"baseline {result['baseline']['per_s']:.0f} rows/s")
        return result
    finally:
        registry.close()
        baseline.dispose()


def _side(count: int, t: Timing, latencies: list[float]) -> dict[str, Any]:
    return {
        "wall_s": round(t.wall, 4),
        "cpu_s": round(t.cpu, 4),
        "per_s": _rate(count, t.wall),
        "cpu_ms_per_op": 1000 * t.cpu / count,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


def _whatif_lean(registry: Registry, subject_id: str, grantee_id: str, until: datetime,
                 sizes: Sizes) -> dict[str, Any]:
    key_id = registry.key_id
    for _ in range(sizes.warmup):
        whatif.lean_grant(registry, key_id, subject_id, grantee_id, until)
    latencies: list[float] = []
    with timed() as t:
        for _ in range(sizes.grants):
            began = time.perf_counter()
            whatif.lean_grant(registry, key_id, subject_id, grantee_id, until)
            latencies.append(time.perf_counter() - began)
    report = registry.verify_log()  # the prototype's entries must verify like the real ones
    return _side(sizes.grants, t, latencies) | {
        "n": sizes.grants,
        "verify_log_ok": report.ok,
        "verify_log_entries": report.size,
        "problems": report.problems[:3],
    }


def _profile_grants(label: str, registry: Registry, subject_id: str, grantee_id: str,
                    until: datetime, count: int, profile_dir: Path) -> dict[str, Any]:
    path = profile_dir / f"registry-grant-{label.lower()}.prof"
    with profiled(path) as profiler:
        for _ in range(count):
            registry.grant(subject_id, grantee_id, ["restore"], not_after=until)
    return {
        "grants": count,
        "prof_file": str(path),
        "breakdown": breakdown(profiler, count, grant_breakdown()),
        "top_tottime": top_functions(profiler, count),
    }


# ------------------------------------------------------------------ 2./3. log, verify, proofs
class LogBuilder:
    """Grows a registry's log with grant entries, honestly signed.

    The first ``append_prefix`` entries go through the registry's own
    ``append`` (``_append`` before; the code path of ``Registry.grant`` minus one
    commit per grant), ``chunk`` per ``db.write()`` transaction. The rest are made by the
    same functions ``append`` uses -- a Grant row as ``Registry.grant`` builds
    it, ``statement_of``, ``Envelope.sign`` with the operator key,
    ``leaf_bytes``, ``merkle.leaf_hash`` -- and written with executemany
    INSERTs, ``chunk`` entries per ``db.write()`` transaction, indexes taken
    from ``max(idx)`` under the writer lock. ``verify_log`` afterwards checks
    every one of them (hash, signature, statement == row, row -> index).
    """

    def __init__(self, registry: Registry, subject_id: str, grantee_id: str, until: datetime,
                 append_prefix: int, chunk: int) -> None:
        self.registry = registry
        self.subject_id = subject_id
        self.grantee_id = grantee_id
        self.until = until
        self.key: SigningKey = registry.log._key
        self.key_id = registry.key_id
        self.append_left = append_prefix
        self.chunk = chunk
        self.append_time = Timing()
        self.append_count = 0
        self.bulk_time = Timing()
        self.bulk_count = 0

    def _row(self) -> Grant:
        return _grant_row(self.key_id, self.subject_id, self.grantee_id, self.until,
                          self.registry.now())

    def grow_to(self, size: int) -> None:
        current = self.registry.log_size()
        while current < size:
            count = min(size - current, self.chunk)
            if self.append_left > 0:
                count = min(count, self.append_left)
                with timed() as t:
                    self._append_chunk(count)
                self.append_time += t
                self.append_count += count
                self.append_left -= count
            else:
                with timed() as t:
                    self._bulk_chunk(count)
                self.bulk_time += t
                self.bulk_count += count
            current += count

    def _append_chunk(self, count: int) -> None:
        registry, key = self.registry, self.key
        append = whatif.method(registry, *whatif.APPEND)
        with registry.db.write() as session:
            for _ in range(count):
                row = self._row()
                envelope = Envelope.sign(statement_of(row), [key])
                append(session, row, "grant", row.id, envelope)

    def _bulk_chunk(self, count: int) -> None:
        registry, key = self.registry, self.key
        with registry.db.write() as session:
            last = session.exec(select(func.max(LogEntry.idx))).one()
            start = 0 if last is None else int(last) + 1
            grants: list[dict[str, Any]] = []
            entries: list[dict[str, Any]] = []
            for offset in range(count):
                row = self._row()
                row.log_index = start + offset
                envelope = Envelope.sign(statement_of(row), [key])
                data = leaf_bytes("grant", row.id, envelope)
                grants.append(_columns(row))
                entries.append({
                    "idx": start + offset,
                    "kind": "grant",
                    "record_id": row.id,
                    "leaf_json": data.decode(),
                    "leaf_hash": merkle.leaf_hash(data).hex(),
                    "created_at": format_time(registry.now()),
                })
            conn = session.connection()
            conn.execute(insert(Grant.__table__), grants)  # type: ignore[attr-defined]
            conn.execute(insert(LogEntry.__table__), entries)  # type: ignore[attr-defined]

    def summary(self) -> dict[str, Any]:
        return {
            "append_path_entries": self.append_count,
            "append_path_wall_s": round(self.append_time.wall, 3),
            "append_path_per_s": _rate(self.append_count, self.append_time.wall),
            "bulk_path_entries": self.bulk_count,
            "bulk_path_wall_s": round(self.bulk_time.wall, 3),
            "bulk_path_per_s": _rate(self.bulk_count, self.bulk_time.wall),
            "entries_per_transaction": self.chunk,
        }


def log_and_proofs(workdir: Path, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    home = workdir / "home-log"
    registry = Registry.init(home, f"sqlite:///{workdir / 'log.db'}")
    try:
        subject, grantee, until = _seed(registry)
        builder = LogBuilder(registry, subject.id, grantee.id, until,
                             sizes.append_prefix, sizes.chunk)
        stops = sorted(set(sizes.log_sizes) | set(sizes.proof_sizes)
                       | {n // 2 for n in sizes.proof_sizes})
        notes: dict[int, str] = {}
        verifies: list[dict[str, Any]] = []
        profile: dict[str, Any] | None = None
        build_began = time.perf_counter()
        for stop in stops:
            builder.grow_to(stop)
            notes[stop] = registry.checkpoint()
            if stop not in sizes.log_sizes:
                continue
            load = load_average()
            with timed() as t:
                report = registry.verify_log()
            verifies.append({
                "entries": stop,
                "wall_s": round(t.wall, 3),
                "cpu_s": round(t.cpu, 3),
                "us_per_entry": 1e6 * t.wall / stop,
                "cpu_us_per_entry": 1e6 * t.cpu / stop,
                "ok": report.ok,
                "size_reported": report.size,
                "checkpoints_verified": report.checkpoints,
                "problems": report.problems[:5],
                "load_average_before": load,
                "process_peak_rss_mb": _peak_rss_mb(),
            })
            note(f"      log at {stop:,} entries (built in "
                 f"{time.perf_counter() - build_began:.0f} s so far): verify_log "
                 f"{t.wall:.1f} s, ok={report.ok}")
            if profile_dir is not None and profile is None:
                note(f"      profiling verify_log at {stop:,} entries ...")
                profile = _profile_verify(registry, stop, profile_dir)
                with timed() as t_parts:
                    profile["components"] = whatif.verify_components(registry, t.cpu / stop)
                profile["wall_s"] += t_parts.wall
        build_wall = time.perf_counter() - build_began - sum(v["wall_s"] for v in verifies)
        if profile is not None:
            build_wall -= profile["wall_s"]
        proofs = [_proofs(registry, n, notes) for n in sizes.proof_sizes]
        build = builder.summary() | {"wall_s_excluding_verify": round(build_wall, 1)}
        return {"build": build, "verify": verifies, "proofs": proofs, "verify_profile": profile}
    finally:
        registry.close()


def _profile_verify(registry: Registry, size: int, profile_dir: Path) -> dict[str, Any]:
    path = profile_dir / f"registry-verify-{size}.prof"
    with timed() as t, profiled(path) as profiler:
        registry.verify_log()
    return {
        "entries": size,
        "wall_s": t.wall,
        "prof_file": str(path),
        "breakdown": breakdown(profiler, size, verify_breakdown()),
        "top_tottime": top_functions(profiler, size),
    }


def _proofs(registry: Registry, n: int, notes: dict[int, str]) -> dict[str, Any]:
    keys = [load_public_key(registry.home.operator_public)]
    note_n, note_half = notes[n], notes[n // 2]
    log_n = math.ceil(math.log2(n))
    rng = random.Random(n)
    indexes = sorted({0, n - 1, *rng.sample(range(n), 3)})

    gen_times: list[float] = []
    hash_counts: list[int] = []
    verify_times: list[float] = []
    bundle_bytes: list[int] = []
    for index in indexes:
        began = time.perf_counter()
        proof = registry.inclusion_proof(index, note_n)
        gen_times.append(time.perf_counter() - began)
        hash_counts.append(len(proof.hashes))
        bundle = proof.to_json() | {"type": "inclusion"}
        bundle_bytes.append(len(json.dumps(bundle)))
        checked = verify_inclusion_bundle(bundle, keys)
        assert checked.tree_size == n
        verify_times.append(_median_call(lambda b=bundle: verify_inclusion_bundle(b, keys), 50))
    load_times: list[float] = []
    for _ in range(3):
        began = time.perf_counter()
        hashes = registry.log.leaf_hashes(n)
        load_times.append(time.perf_counter() - began)
        assert len(hashes) == n
    load_s = statistics.median(load_times)

    cons_times: list[float] = []
    for _ in range(3):
        began = time.perf_counter()
        cons = registry.consistency_proof(n // 2, n)
        cons_times.append(time.perf_counter() - began)
    cons_bundle = {
        "type": "consistency",
        "old_checkpoint": note_half,
        "new_checkpoint": note_n,
        "hashes": [h.hex() for h in cons],
    }
    old, new = verify_consistency_bundle(cons_bundle, keys)
    assert (old.tree_size, new.tree_size) == (n // 2, n)
    cons_verify = _median_call(lambda: verify_consistency_bundle(cons_bundle, keys), 50)
    return {
        "n": n,
        "ceil_log2_n": log_n,
        "inclusion": {
            "indexes": indexes,
            "hashes_max": max(hash_counts),
            "hashes_min": min(hash_counts),
            "bytes_max": 32 * max(hash_counts),
            "bound_bytes": 32 * log_n,
            "within_bound": 32 * max(hash_counts) <= 32 * log_n,
            "bundle_json_bytes_max": max(bundle_bytes),
            "generate_ms_median": 1000 * statistics.median(gen_times),
            "load_leaf_hashes_ms": 1000 * load_s,
            "offline_verify_ms_median": 1000 * statistics.median(verify_times),
        },
        "consistency": {
            "old_size": n // 2,
            "hashes": len(cons),
            "bytes": 32 * len(cons),
            "bound_bytes": 32 * (log_n + 1),
            "within_bound": len(cons) <= log_n + 1,
            "bundle_json_bytes": len(json.dumps(cons_bundle)),
            "generate_ms_median": 1000 * statistics.median(cons_times),
            "offline_verify_ms_median": 1000 * cons_verify,
        },
    }


def _median_call(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


# ------------------------------------------------------------------ driver
def _postgres_run(workdir: Path, sizes: Sizes, profile_dir: Path | None) -> dict[str, Any]:
    try:
        from tests.pgserver import ThrowawayPostgres
    except ImportError as exc:
        return {"backend": "PostgreSQL", "skipped": f"tests.pgserver not importable: {exc}"}
    try:
        server = ThrowawayPostgres().start()
    except RuntimeError as exc:
        return {"backend": "PostgreSQL", "skipped": str(exc).splitlines()[0]}
    try:
        version = server.server_version()
        ours = server.create_database("bench_registry")
        base = server.create_database("bench_baseline")
        result = grant_throughput("PostgreSQL", ours, base, workdir / "home-pg", sizes, profile_dir)
        result["server"] = (f"PostgreSQL {version} (ThrowawayPostgres: fsync=off, "
                            "synchronous_commit=off, full_page_writes=off)")
        return result
    finally:
        server.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if args.grants:
        sizes = Sizes(**(asdict(sizes) | {"grants": args.grants}))
    profile_dir: Path | None = args.out if args.profile else None
    workdir = Path(tempfile.mkdtemp(prefix="consentry-bench-"))
    console.print(f"\n== registry ==  workdir {workdir}")
    try:
        note(f"[1/3] grants on SQLite: {sizes.warmup} warm-up, {sizes.grants} timed ...")
        grants = [grant_throughput("SQLite", f"sqlite:///{workdir / 'grants.db'}",
                                   f"sqlite:///{workdir / 'baseline.db'}",
                                   workdir / "home-sqlite", sizes, profile_dir)]
        if args.no_postgres:
            grants.append({"backend": "PostgreSQL", "skipped": "--no-postgres"})
        else:
            note("[1/3] grants on PostgreSQL (ThrowawayPostgres) ...")
            grants.append(_postgres_run(workdir, sizes, profile_dir))
        note(f"[2/3] building the log to {max(sizes.log_sizes)} entries, verify_log at "
             f"{', '.join(map(str, sizes.log_sizes))}; [3/3] proofs ...")
        log = log_and_proofs(workdir, sizes, profile_dir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"sizes": asdict(sizes), "grants": grants, **log,
              "load_average_at_end": load_average(),
              "targets": {"sqlite_grants_per_s": SQLITE_TARGET_GPS,
                          "verify_entries": VERIFY_TARGET_N, "verify_seconds": VERIFY_TARGET_S}}
    report(result, sizes)
    return result
