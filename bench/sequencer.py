"""``python -m bench sequencer``: in-process decision throughput, batched vs one by one.

What is measured: T threads (``--seq-threads``, default 1, 8, 32) each calling
``record_decision`` in a loop for ``--seq-seconds`` on one registry (SQLite in a
temporary folder; PostgreSQL too unless ``--seq-no-postgres``). Half the calls are
allows naming a real grant (so the consent follower and the in-transaction
re-check run), half refusals; every call has its own input hash. Reported per T:
decisions/s, p50/p95 latency of one call, the mean batch size
(``registry.sequencer.stats()``).

**Baseline, in the same run**: the same load with batching disabled
(``DecisionSequencer(max_batch=1)``: one writer transaction per decision, what
``record_decision`` did before the sequencer). The two alternate per T on the
same registry, so log size and machine load are alike.

After the runs the registry's log is checked: indexes gap-free, one leaf per
decision, and ``registry.verify_log()`` (every signature and stored hash) ok.
``--profile`` adds a cProfile of the batched run at the largest T, timed by each
thread's own CPU clock (``time.thread_time``: waiting for the lock, the GIL or the
disk is not counted) and merged over the threads: where the per-decision CPU goes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench._common import console, load_average, note, percentile, table, top_functions
from consentry.registry.decisions import record_decision
from consentry.registry.models import Grant, Grantee, Subject
from consentry.registry.sequencer import MAX_BATCH, DecisionSequencer
from consentry.registry.store import Registry

FULL_THREADS = (1, 8, 32)
_T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def _clock() -> datetime:
    return _T0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sequencer")
    group.add_argument(
        "--seq-seconds",
        type=float,
        default=None,
        help="seconds per configuration (default 5, quick 1.5)",
    )
    group.add_argument(
        "--seq-threads",
        type=str,
        default=None,
        help="comma-separated thread counts (default 1,8,32)",
    )
    group.add_argument(
        "--seq-wait",
        type=float,
        default=0.0,
        help="the batched sequencer's max_wait in seconds (default 0)",
    )
    group.add_argument(
        "--seq-no-postgres", action="store_true", help="sequencer: skip the PostgreSQL rows"
    )


class _People:
    def __init__(self, registry: Registry) -> None:
        self.subject: Subject = registry.add_subject("Bench Subject")
        self.grantee: Grantee = registry.add_grantee("Bench Grantee")[0]
        self.grant: Grant = registry.grant(self.subject.id, self.grantee.id, ["generate"])


def _one_decision(registry: Registry, people: _People, n: int) -> None:
    """Decision number ``n``: an allow naming the real grant when even (so the
    leader's catch-up and the in-transaction re-check run), else a refusal."""
    allow = n % 2 == 0
    record_decision(
        registry,
        people.grantee.id,
        "generate",
        allow,
        [] if allow else ["bench refusal"],
        [people.grant.id] if allow else [],
        [people.subject.id],
        None,
        [f"{n:064x}"],
        [],
    )


def load(
    registry: Registry,
    people: _People,
    threads: int,
    seconds: float,
    base: int,
    profile: bool = False,
) -> dict[str, Any]:
    """``threads`` callers for ``seconds``; decisions/s, latency percentiles, batches."""
    before = registry.sequencer.stats()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    profiles: list[cProfile.Profile] = []
    go = threading.Barrier(threads + 1)
    stop = threading.Event()

    def caller(me: int) -> None:
        mine = latencies[me]
        profiler = cProfile.Profile(time.thread_time) if profile else None
        go.wait()
        if profiler is not None:
            profiler.enable()
        n = base + me * 10_000_000
        try:
            while not stop.is_set():
                began = time.perf_counter()
                _one_decision(registry, people, n)
                mine.append(time.perf_counter() - began)
                n += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            if profiler is not None:
                profiler.disable()
                profiles.append(profiler)

    pool = [threading.Thread(target=caller, args=(me,)) for me in range(threads)]
    for thread in pool:
        thread.start()
    go.wait()
    began, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    if errors:
        raise errors[0]
    after = registry.sequencer.stats()
    flat = [x for mine in latencies for x in mine]
    batches = after.batches - before.batches
    done = after.decisions - before.decisions
    out: dict[str, Any] = {
        "threads": threads,
        "decisions": len(flat),
        "seconds": elapsed,
        "per_s": len(flat) / elapsed,
        "cpu_ms_per_decision": 1000 * cpu / max(len(flat), 1),
        "p50_ms": 1000 * percentile(flat, 50),
        "p95_ms": 1000 * percentile(flat, 95),
        "batches": batches,
        "mean_batch": done / batches if batches else 0.0,
        "largest_batch": after.largest_batch,
    }
    if profiles:
        out["profile"] = _merged(profiles)
    return out


def _merged(profiles: list[cProfile.Profile]) -> pstats.Stats:
    """The callers' profiles as one ``pstats.Stats``."""
    merged = pstats.Stats(profiles[0])
    for extra in profiles[1:]:
        merged.add(extra)
    return merged


def check_log(registry: Registry, decisions: int, start: int) -> dict[str, Any]:
    """Gap-free, one leaf per decision, and ``verify_log`` ok."""
    with registry.db.read() as session:
        indexes = [
            int(r[0]) for r in session.execute(text("SELECT idx FROM log_entries ORDER BY idx"))
        ]
        rows = session.execute(text("SELECT COUNT(*) FROM decisions")).scalar_one()
        logged = session.execute(
            text("SELECT COUNT(*) FROM log_entries WHERE kind = 'decision'")
        ).scalar_one()
    began = time.perf_counter()
    report = registry.verify_log()
    return {
        "size": len(indexes),
        "gap_free": indexes == list(range(len(indexes))),
        "decisions_added": len(indexes) - start,
        "decisions_counted": decisions,
        "rows_match_leaves": int(rows) == int(logged),
        "verify_ok": report.ok,
        "verify_s": time.perf_counter() - began,
        "problems": report.problems[:5],
    }


def backend_run(
    name: str,
    url: str | None,
    work: Path,
    threads: list[int],
    seconds: float,
    wait: float,
    profile: bool,
) -> dict[str, Any]:
    home = work / f"home-{name.lower()}"
    registry = Registry.init(home, url, clock=_clock, witness_dir=work / "witness")
    try:
        people = _People(registry)
        batched = DecisionSequencer(registry, max_batch=MAX_BATCH, max_wait=wait)
        single = DecisionSequencer(registry, max_batch=1)
        registry.sequencer = batched
        load(registry, people, 2, 0.3, base=1 << 60)  # warm: caches, consent state
        start = registry.log_size()
        results: list[dict[str, Any]] = []
        total = 0
        for t in threads:
            pair: dict[str, Any] = {"threads": t}
            for mode, sequencer in (("baseline", single), ("batched", batched)):
                registry.sequencer = sequencer
                base = (len(results) * 2 + (mode == "batched")) << 40
                pair[mode] = load(registry, people, t, seconds, base)
                total += pair[mode]["decisions"]
            results.append(pair)
        prof = None
        if profile:
            registry.sequencer = batched
            run = load(registry, people, max(threads), seconds, base=1 << 50, profile=True)
            total += run["decisions"]
            prof = (run.pop("profile"), run["decisions"])
        checked = check_log(registry, total, start)
    finally:
        registry.close()
    return {"backend": name, "runs": results, "log": checked, "_profile": prof}


def _rows(result: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for pair in result["runs"]:
        b, s = pair["batched"], pair["baseline"]
        rows.append(
            [
                f"{result['backend']} T={pair['threads']}",
                f"{b['per_s']:,.0f}",
                f"{b['p50_ms']:.2f}",
                f"{b['p95_ms']:.2f}",
                f"{b['mean_batch']:.1f}",
                f"{b['cpu_ms_per_decision']:.2f}",
                f"{s['per_s']:,.0f}",
                f"{s['p50_ms']:.2f}",
                f"{s['p95_ms']:.2f}",
                f"{s['cpu_ms_per_decision']:.2f}",
                f"{b['per_s'] / s['per_s']:.2f}x",
            ]
        )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    seconds = args.seq_seconds or (1.5 if quick else 5.0)
    threads = [int(t) for t in (args.seq_threads or "").split(",") if t.strip()] or list(
        FULL_THREADS
    )
    work = Path(tempfile.mkdtemp(prefix="bench-seq-"))
    os.environ["CONSENTRY_WITNESS_DIR"] = str(work / "witness")
    load_start = load_average()
    results = [backend_run("SQLite", None, work, threads, seconds, args.seq_wait, args.profile)]
    if not args.seq_no_postgres:
        results.append(_postgres(work, threads, seconds, args.seq_wait))
    load_end = load_average()
    rows: list[list[object]] = []
    for result in results:
        if "skipped" in result:
            note(f"[sequencer] {result['backend']}: skipped ({result['skipped']})")
            continue
        rows.extend(_rows(result))
    checks = "; ".join(
        f"{r['backend']}: {r['log']['size']:,} entries, gap-free={r['log']['gap_free']}, "
        f"rows match leaves={r['log']['rows_match_leaves']}, verify_log ok={r['log']['verify_ok']}"
        f" ({r['log']['verify_s']:.1f} s)"
        for r in results
        if "log" in r
    )
    table(
        "sequencer: record_decision throughput, group commit vs one transaction per decision",
        [
            "backend, threads",
            "dec/s",
            "p50 ms",
            "p95 ms",
            "mean batch",
            "CPU ms",
            "base dec/s",
            "base p50",
            "base p95",
            "base CPU ms",
            "speed-up",
        ],
        rows,
        caption=(
            f"{seconds:g} s per cell; CPU ms = process CPU time (all threads; SQLite's work "
            "included, the PostgreSQL server's not) per decision. Half allows (real grant, "
            "re-checked) and half refusals; "
            f"batched = DecisionSequencer(max_batch={MAX_BATCH}, max_wait={args.seq_wait:g} s), "
            "base = max_batch=1 (one writer transaction per decision), same run, same "
            f"registry. {os.cpu_count()} CPUs; load average (1/5/15 min) at start "
            f"{load_start}, at end {load_end}.\nlog after the runs: {checks}."
        ),
    )
    for result in results:
        prof = result.pop("_profile", None)
        if prof is not None:
            stats, count = prof
            dump = work / f"sequencer-{result['backend'].lower()}.prof"
            stats.dump_stats(str(dump))
            table(
                f"sequencer: where a batched decision's time goes ({result['backend']}, "
                f"T={max(threads)}, thread CPU time, all threads merged)",
                ["function", "calls/dec", "own ms/dec", "cum ms/dec", "% own"],
                top_functions(str(dump), max(count, 1), limit=18),
            )
    note(f"work folder (delete when done): {work}")
    console.print()
    return {
        "seconds": seconds,
        "threads": threads,
        "max_wait": args.seq_wait,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "results": results,
    }


def _postgres(work: Path, threads: list[int], seconds: float, wait: float) -> dict[str, Any]:
    try:
        from tests.pgserver import ThrowawayPostgres
    except ImportError as exc:
        return {"backend": "PostgreSQL", "skipped": f"tests.pgserver not importable: {exc}"}
    try:
        server = ThrowawayPostgres().start()
    except RuntimeError as exc:
        return {"backend": "PostgreSQL", "skipped": str(exc).splitlines()[0]}
    try:
        url = server.create_database("bench_sequencer")
        result = backend_run("PostgreSQL", url, work, threads, seconds, wait, False)
        result["server"] = (
            f"PostgreSQL {server.server_version()} (ThrowawayPostgres: "
            "fsync=off, synchronous_commit=off, full_page_writes=off)"
        )
        return result
    finally:
        server.close()
