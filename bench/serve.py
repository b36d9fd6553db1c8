"""``python -m bench serve``: prompt-only checks over HTTP with concurrent clients.

Real ``consentry serve`` processes on loopback over one SQLite registry (a fresh
home per mode, built the same way: 200 subjects with aliases, two grantees, grants
from half the subjects to one of them). Each client thread sends ``POST /v1/check``
(purpose generate, a prompt naming one subject or none) for a fixed time after a
warm-up; every answer is checked against the ground truth (allowed iff the prompt
names no subject, or a subject that granted the caller) and, after the servers
stop, the log must hold exactly one decision per answer, gap-free, all covered by
a checkpoint. Besides decisions/s, each mode reports the CPU time the serve
processes (``/proc/PID/stat``) and the client threads spent per answered check in
the timed part: on a shared machine it moves far less with the load than the rate.

Modes, in one run:
- ``baseline``: ``serve --checkpoint-every-decision --serial``: every check under one
  lock and a checkpoint of the whole log signed per decision (the service before
  issue 12).
- ``cadence``: ``serve`` as shipped: concurrent checks (thread pool, no face lock
  for prompt-only checks), checkpoints every second.
- ``2 processes``: two ``serve`` processes on one database, clients alternating.
- ``2 processes on PostgreSQL``: the same on a throwaway PostgreSQL server
  (``tests.pgserver.ThrowawayPostgres``, on the same machine, durability off) from
  one home (``--serve-no-postgres`` skips it; a missing server is a "skipped" row).

A second table runs the same checks through ``Gateway.check`` in this process (no
HTTP), from 1 thread and from N threads, on a gateway set up as ``serve`` sets it
up, with the same ground-truth and log checks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._common import load_average, note, percentile, table
from bench.http_client import HttpClientError, KeepAliveClient

ADMIN_KEY = "csa_bench-serve-admin"
SUBJECTS = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serve")
    group.add_argument(
        "--serve-clients", type=int, default=8, help="serve: concurrent HTTP clients (default 8)"
    )
    group.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="serve: seconds measured per mode (default 30, quick 6)",
    )
    group.add_argument(
        "--serve-client",
        choices=["raw", "httpx"],
        default="raw",
        help="serve: the load generator: a minimal keep-alive client (raw, default: about "
        "0.3 ms of client CPU per check) or httpx (about 1.6 ms, CPU the servers lose)",
    )
    group.add_argument(
        "--serve-no-postgres",
        action="store_true",
        help="serve: skip the mode on PostgreSQL",
    )


@dataclass
class World:
    home: Path
    keys: dict[str, str]
    jobs: list[tuple[str, str, bool]]  # (grantee, prompt, allowed)


def build_world(root: Path, db_url: str | None = None) -> World:
    from consentry.registry.store import Registry

    rng = random.Random(12)
    registry = Registry.init(root / "home", db_url)
    try:
        _, granted = registry.add_grantee("Studio")
        _, other = registry.add_grantee("Agency")
        names: list[tuple[str, bool]] = []
        for number in range(SUBJECTS):
            name = f"Person{number:03d} Example"
            subject = registry.add_subject(name, [f"P{number:03d}x"])
            consented = number % 2 == 0
            if consented:
                registry.grant(subject.id, "Studio", ["generate"])
            names.append((name, consented))
        registry.checkpoint()
    finally:
        registry.close()
    jobs: list[tuple[str, str, bool]] = []
    for _ in range(400):
        grantee = rng.choice(["Studio", "Agency"])
        if rng.random() < 0.3:
            jobs.append((grantee, "a red house at dusk, watercolour", True))
            continue
        name, consented = rng.choice(names)
        jobs.append((grantee, f"{name} on a beach at noon", grantee == "Studio" and consented))
    return World(root / "home", {"Studio": granted, "Agency": other}, jobs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(home: Path, flags: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(os.environ) | {"CONSENTRY_HOME": str(home), "CONSENTRY_ADMIN_KEY": ADMIN_KEY}
    argv = [
        sys.executable,
        "-c",
        "from consentry.cli.main import run; run()",
        "serve",
        "--port",
        str(port),
        *flags,
    ]
    # stderr to a file, never an undrained pipe: a full pipe would stall the server
    log_path = home.parent / f"serve-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_bytes().decode(errors="replace")[-2000:]
            raise RuntimeError(f"serve exited: {tail}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("serve did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    wrong: int = 0
    errors: int = 0
    indexes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float | None = None  # CPU seconds of the serve processes, timed part
    client_cpu: float = 0.0  # CPU seconds of this process (the clients), timed part


def _warm_up(world: World, bases: list[str], result: Result) -> None:
    """A few checks per server, not measured (their log indexes are counted)."""
    for base in bases:
        with httpx.Client(base_url=base, timeout=60) as http:
            for grantee, prompt, _ in world.jobs[:10]:
                response = http.post(
                    "/v1/check",
                    headers={"Authorization": f"Bearer {world.keys[grantee]}"},
                    data={"purpose": "generate", "prompt": prompt},
                )
                result.indexes.append(int(response.json()["log_index"]))


def _post(http: Any, raw: bool, key: str, prompt: str) -> tuple[bool, Any]:
    """One check: (answered 200, its JSON body); a transport error is (False, {})."""
    headers = {"Authorization": f"Bearer {key}"}
    fields = {"purpose": "generate", "prompt": prompt}
    try:
        if raw:
            status, body = http.post_form("/v1/check", fields, headers)
            return status == 200, body
        response = http.post("/v1/check", headers=headers, data=fields)
        return response.status_code == 200, response.json()
    except (httpx.HTTPError, HttpClientError, OSError, ValueError):
        return False, {}


def _drive(
    world: World,
    bases: list[str],
    clients: int,
    seconds: float,
    pids: list[int],
    raw: bool = True,
) -> Result:
    """``clients`` threads checking for ``seconds``; ``raw``: each on a
    :class:`bench.http_client.KeepAliveClient` (else an ``httpx.Client``)."""
    result = Result()
    lock = threading.Lock()
    stop_at = [0.0]

    def client(number: int) -> None:
        rng = random.Random(number)
        base = bases[number % len(bases)]
        maker = KeepAliveClient(base) if raw else httpx.Client(base_url=base, timeout=60)
        with maker as http:
            while time.perf_counter() < stop_at[0]:
                grantee, prompt, allowed = rng.choice(world.jobs)
                began = time.perf_counter()
                ok, body = _post(http, raw, world.keys[grantee], prompt)
                spent = time.perf_counter() - began
                with lock:
                    if not ok:
                        result.errors += 1
                        continue
                    result.latencies.append(spent)
                    result.indexes.append(int(body["log_index"]))
                    if body["allowed"] is not allowed:
                        result.wrong += 1

    _warm_up(world, bases, result)
    servers_before = [_cpu_seconds(pid) for pid in pids]
    clients_before = time.process_time()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    result.client_cpu = time.process_time() - clients_before
    servers_after = [_cpu_seconds(pid) for pid in pids]
    if None not in servers_before and None not in servers_after:
        result.server_cpu = sum(
            float(a or 0.0) - float(b or 0.0)
            for a, b in zip(servers_after, servers_before, strict=True)
        )
    return result


def _log_check(home: Path, indexes: list[int]) -> tuple[bool, int]:
    """Every answered check is one decision entry, the decisions are gap-free, and a
    checkpoint covers the whole log. Returns (ok, log size)."""
    from consentry.registry import checkpoint as cp
    from consentry.registry.store import Registry

    with Registry.open(home) as registry:
        size = registry.log_size()
        covered = cp.parse_checkpoint(registry.latest_checkpoint())[0].tree_size
        first = min(indexes)
        decisions = [i for i in range(first, size) if registry.entry(i).kind == "decision"]
    return sorted(indexes) == decisions == list(range(first, size)) and covered == size, size


def _in_process(world: World, threads: int, seconds: float) -> dict[str, Any]:
    """Prompt-only ``Gateway.check`` calls in this process, no HTTP: the world's jobs
    from ``threads`` threads for ``seconds`` on a gateway set up as ``serve`` sets it
    up (cadence checkpointer, background follower). Every answer is checked against
    the ground truth (requesters by id: the service passes the key holder's id)."""
    from consentry.faces.engines import get_engine
    from consentry.gate import CheckRequest, Gateway
    from consentry.registry.checkpointer import Checkpointer
    from consentry.registry.store import Registry

    with Registry.open(world.home) as registry:
        checkpointer = Checkpointer(registry, interval=1.0)
        checkpointer.start()
        gateway = Gateway(registry, get_engine("sface"), checkpointer=checkpointer)
        gateway.index.follow(0.2)
        ids = {name: registry.get_grantee(name).id for name in world.keys}
        jobs = [(ids[grantee], prompt, allowed) for grantee, prompt, allowed in world.jobs]
        wrong = [0]
        done = [0]
        indexes: list[int] = []
        lock = threading.Lock()
        stop_at = [0.0]

        def worker(number: int) -> None:
            rng = random.Random(number)
            while time.perf_counter() < stop_at[0]:
                grantee, prompt, allowed = rng.choice(jobs)
                receipt = gateway.check(CheckRequest(grantee, "generate", (), prompt))
                with lock:
                    done[0] += 1
                    wrong[0] += receipt.allowed is not allowed
                    indexes.append(-1 if receipt.log_index is None else receipt.log_index)

        try:
            for grantee, prompt, _ in jobs[:10]:  # warm-up
                warm = gateway.check(CheckRequest(grantee, "generate", (), prompt))
                indexes.append(-1 if warm.log_index is None else warm.log_index)
            cpu_before = time.process_time()
            began = time.perf_counter()
            stop_at[0] = began + seconds
            pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            elapsed = time.perf_counter() - began
            cpu = time.process_time() - cpu_before
        finally:
            gateway.index.stop()
            checkpointer.stop()
    answered = max(1, done[0])
    return {
        "threads": threads,
        "decisions": done[0],
        "decisions_per_s": done[0] / elapsed,
        "cpu_ms_per_decision": 1000 * cpu / answered,
        "wrong_answers": wrong[0],
        "indexes": indexes,
    }


MODES: dict[str, tuple[list[str], int]] = {
    "baseline: checkpoint every decision, one lock": (
        ["--checkpoint-every-decision", "--serial"],
        1,
    ),
    "cadence checkpoints (1 s), concurrent checks": ([], 1),
    "cadence, 2 serve processes on one database": ([], 2),
}
# on PostgreSQL (one throwaway server for the run), after the SQLite modes
POSTGRES_MODES: dict[str, tuple[list[str], int]] = {
    "cadence, 2 serve processes on one PostgreSQL": ([], 2),
}


class _NoPostgresError(Exception):
    """The PostgreSQL modes cannot run here (why in the message)."""


def _postgres(stack: contextlib.ExitStack) -> Any:
    """A throwaway PostgreSQL server, stopped when ``stack`` closes."""
    try:
        from tests.pgserver import ThrowawayPostgres
    except ImportError as exc:  # run from elsewhere than the repository root
        raise _NoPostgresError(f"tests.pgserver not importable: {exc}") from exc
    try:
        return stack.enter_context(ThrowawayPostgres())
    except RuntimeError as exc:  # no server binaries, or it did not start
        raise _NoPostgresError(str(exc).splitlines()[0]) from exc


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.serve_seconds or (6.0 if args.quick else 30.0)
    clients = args.serve_clients
    rows: list[list[object]] = []
    out: dict[str, Any] = {
        "clients": clients,
        "client": args.serve_client,
        "seconds": seconds,
        "modes": {},
    }
    baseline_rate = None
    in_rows: list[list[object]] = []
    out["in_process"] = []
    modes: list[tuple[str, list[str], int, bool]] = [
        (name, flags, processes, False) for name, (flags, processes) in MODES.items()
    ] + [(name, flags, processes, True) for name, (flags, processes) in POSTGRES_MODES.items()]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-"))
        os.environ.setdefault("CONSENTRY_WITNESS_DIR", str(Path(tmp) / "witness"))
        server: Any = None
        for number, (name, flags, processes, on_postgres) in enumerate(modes):
            db_url = None
            if on_postgres:
                try:
                    if args.serve_no_postgres:
                        raise _NoPostgresError("--serve-no-postgres")
                    server = server or _postgres(stack)
                except _NoPostgresError as exc:
                    rows.append([name, processes, *["-"] * 10, f"skipped: {exc}"])
                    out["modes"][name] = {"processes": processes, "skipped": str(exc)}
                    continue
                db_url = server.create_database(f"bench_serve_{number}")
            world = build_world(Path(tmp) / f"mode{number}", db_url)
            servers = [_start(world.home, flags) for _ in range(processes)]
            try:
                result = _drive(
                    world,
                    [base for _, base in servers],
                    clients,
                    seconds,
                    [process.pid for process, _ in servers],
                    raw=args.serve_client == "raw",
                )
            finally:
                for process, _ in servers:
                    _stop(process)
            gap_free, size = _log_check(world.home, result.indexes)
            rate = len(result.latencies) / result.seconds
            baseline_rate = baseline_rate or rate
            p50 = 1000 * percentile(result.latencies, 50)
            p95 = 1000 * percentile(result.latencies, 95)
            answered = max(1, len(result.latencies))
            server_ms = None if result.server_cpu is None else 1000 * result.server_cpu / answered
            client_ms = 1000 * result.client_cpu / answered
            rows.append(
                [
                    name,
                    processes,
                    len(result.latencies),
                    f"{rate:.0f}",
                    f"{p50:.1f}",
                    f"{p95:.1f}",
                    f"{rate / baseline_rate:.2f}x",
                    "n/a" if server_ms is None else f"{server_ms:.2f}",
                    f"{client_ms:.2f}",
                    result.wrong,
                    result.errors,
                    "yes" if gap_free else "NO",
                    size,
                ]
            )
            out["modes"][name] = {
                "processes": processes,
                "flags": flags,
                "database": "postgresql" if on_postgres else "sqlite",
                "decisions": len(result.latencies),
                "decisions_per_s": rate,
                "p50_ms": p50,
                "p95_ms": p95,
                "server_cpu_ms_per_decision": server_ms,
                "client_cpu_ms_per_decision": client_ms,
                "wrong_answers": result.wrong,
                "errors": result.errors,
                "log_gap_free_and_covered": gap_free,
                "log_size": size,
            }
        for threads in (1, clients):  # the same checks in process, no HTTP
            world = build_world(Path(tmp) / f"in-process-{threads}")
            found = _in_process(world, threads, seconds)
            gap_free, size = _log_check(world.home, found.pop("indexes"))
            found["log_gap_free_and_covered"] = gap_free
            out["in_process"].append(found)
            in_rows.append(
                [
                    threads,
                    found["decisions"],
                    f"{found['decisions_per_s']:.0f}",
                    f"{found['cpu_ms_per_decision']:.2f}",
                    found["wrong_answers"],
                    "yes" if gap_free else "NO",
                    size,
                ]
            )
    table(
        f"prompt-only POST /v1/check over HTTP, {clients} {args.serve_client} clients, "
        f"{seconds:.0f} s per mode",
        [
            "mode",
            "procs",
            "decisions",
            "dec/s",
            "p50 ms",
            "p95 ms",
            "vs baseline",
            "server CPU ms",
            "client CPU ms",
            "wrong",
            "errors",
            "log ok",
            "log size",
        ],
        rows,
        caption=(
            f"Clients run on the same machine as the servers (load {load_average()}). "
            "server/client CPU ms: CPU time of the serve processes / of the client "
            "threads per answered check in the timed part (less noisy than dec/s on a "
            "shared machine). wrong: answers differing from the ground truth; log ok: one decision "
            "per answer, gap-free, covered by a checkpoint after the servers stop. "
            "The PostgreSQL server runs on the same machine too (durability off). "
            "Goal (issue 12): >= 300 decisions/s."
        ),
    )
    table(
        f"prompt-only Gateway.check in process (no HTTP), {seconds:.0f} s per row",
        ["threads", "decisions", "dec/s", "CPU ms", "wrong", "log ok", "log size"],
        in_rows,
        caption=(
            f"Load {load_average()}. CPU ms: this process's CPU time per logged decision "
            "(the gateway, its background follower and checkpointer). log ok: the "
            "decisions are gap-free to the end of the log and covered by a checkpoint. "
            "Goal (issue 12): >= 1,000 logged decisions/s in process."
        ),
    )
    note("")
    return out
