"""``python -m bench gateway``: the gateway under HTTP load, and its overhead per job.

1. **Load.** A registry of 1,000 subjects (real identities enrolled from real
   photos, the rest synthetic-embedding fillers: see :mod:`bench.gateway_data`)
   is served by the real service, ``consentry serve`` in a subprocess (its own
   interpreter, so clients and server share no GIL). N client threads (httpx, one
   keep-alive connection each) post multipart ``/v1/check`` jobs from a mix with
   known ground truth (granted face, ungranted face, unregistered face, no face,
   a prompt naming a subject by alias, another grantee's key). Every response is
   checked against the truth: 5xx, allows of jobs without a grant (must both be
   0), wrong refusals, and the involved subjects. Baselines measured in the same
   run: ``GET /healthz`` on the same server with the same clients (the HTTP
   floor), and the same jobs through ``Gateway.check`` in this process, no HTTP,
   one at a time.
2. **Overhead.** ``run_job`` on the tiny diffusers pipeline
   (``build_tiny_pipeline``, ``DiffusersBackend``) with the backend wrapped to
   time the pipeline call, and the gateway's stages timed by wrappers set on the
   objects in memory (nothing on disk is patched). The same jobs with a
   stand-in backend that returns a real 512x512 face photo at once measure the
   gateway's overhead at SD 1.5's output size; that overhead is compared with
   stated SD 1.5 pipeline times (ESTIMATE: the pipeline times are assumptions
   with their sources, not measured here).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._common import console, load_average, note, percentile
from bench.gateway_data import (
    CHECK_PURPOSE,
    Job,
    World,
    build_world,
)
from bench.gateway_overhead import Stopwatch, instrumented, overhead, sd15_estimate
from bench.gateway_report import SD15_STEPS, report
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway
from consentry.registry.store import Registry

ADMIN_KEY = "csa_bench-gateway-admin-key"

@dataclass(frozen=True)
class Sizes:
    check_seconds: float  # the main /v1/check run with N clients
    side_seconds: float  # each baseline phase: healthz, 1 client, in-process
    overhead_runs: int  # timed run_job calls per job type (after one warm-up)
    steps: int  # tiny pipeline steps
    rounds: int  # 1-client HTTP and in-process blocks alternate in this many rounds


FULL = Sizes(60.0, 30.0, 10, 20, 4)
QUICK = Sizes(10.0, 6.0, 2, 20, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument("--clients", type=int, default=8,
                       help="gateway: concurrent HTTP clients (default 8)")
    group.add_argument("--seconds", type=float, default=None,
                       help="gateway: seconds of the main /v1/check run (default 60, quick 10)")
    group.add_argument("--torch-threads", type=int, default=1,
                       help="gateway: torch threads for the tiny pipeline (default 1: on a "
                            "shared 2-core machine 2 OpenMP threads ran it 15-20x slower)")
    group.add_argument("--sd15-seconds", type=float, default=None,
                       help=f"gateway: a measured SD 1.5 512x512 {SD15_STEPS}-step pipeline "
                            "time to add to the estimate table")


# ------------------------------------------------------------------ the server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_command() -> list[str]:
    script = Path(sys.executable).parent / "consentry"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from consentry.cli.main import run; run()"]


class Server:
    """``consentry serve`` on loopback in a child process; its log goes to a file."""

    def __init__(self, home: Path, log_path: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = float("nan")
        self.command = [*_serve_command(), "serve", "--home", str(home), "--port", str(self.port)]

    def start(self, timeout: float = 180.0) -> None:
        env = dict(os.environ, CONSENTRY_ADMIN_KEY=ADMIN_KEY, HF_HUB_OFFLINE="1")
        began = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
        deadline = began + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"consentry serve exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"consentry serve not ready in {timeout:.0f} s")
            time.sleep(0.1)
        self.startup_seconds = time.perf_counter() - began

    def cpu_seconds(self) -> float:
        """The server process's user + system CPU time so far (Linux /proc)."""
        if self.process is None:
            return float("nan")
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Lines of the server log that report an error (tracebacks, 5xx in the access log)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in text if "Traceback" in line or "ERROR" in line
                or '" 5' in line]


# ------------------------------------------------------------------ load
@dataclass
class Outcome:
    kind: str
    job: int
    latency: float
    status: int  # 0: transport error
    allowed: bool | None = None
    subjects: tuple[str, ...] = ()
    logged: bool = False
    error: str = ""


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float  # wall time from start to the last completion
    outcomes: list[Outcome]
    server_cpu: float = float("nan")
    client_cpu: float = float("nan")
    log_added: int = 0  # log entries appended during the phase (one per decision)
    stages: list[list[object]] = field(default_factory=list)


def _form(job: Job) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    files = [("images", (job.image_name, job.image, "image/jpeg"))] if job.image else []
    return {"purpose": CHECK_PURPOSE, "prompt": job.prompt}, files


def _post_check(http: httpx.Client, world: World, index: int) -> Outcome:
    job = world.jobs[index % len(world.jobs)]
    data, files = _form(job)
    began = time.perf_counter()
    try:
        response = http.post("/v1/check", data=data, files=files,
                             headers={"Authorization": f"Bearer {world.keys[job.key]}"})
    except httpx.HTTPError as exc:
        return Outcome(job.kind, index, time.perf_counter() - began, 0,
                       error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - began
    if response.status_code != 200:
        return Outcome(job.kind, index, latency, response.status_code,
                       error=response.text[:300])
    body = response.json()
    return Outcome(job.kind, index, latency, 200, bool(body.get("allowed")),
                   tuple(body.get("subjects") or ()), body.get("log_index") is not None)


def _get_health(http: httpx.Client, _world: World, index: int) -> Outcome:
    began = time.perf_counter()
    try:
        response = http.get("/healthz")
    except httpx.HTTPError as exc:
        return Outcome("healthz", index, time.perf_counter() - began, 0, error=str(exc))
    latency = time.perf_counter() - began
    ok = response.status_code == 200 and response.json().get("status") == "ok"
    return Outcome("healthz", index, latency, response.status_code, error="" if ok else
                   response.text[:300])


def http_phase(name: str, server: Server, world: World, clients: int, seconds: float,
               send: Callable[[httpx.Client, World, int], Outcome], start_at: int) -> Phase:
    """``clients`` threads send requests until ``seconds`` have passed since the start."""
    counter = itertools.count(start_at)
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    began = time.perf_counter()
    deadline = began + seconds
    last_end = [began]

    def client() -> None:
        with httpx.Client(base_url=server.base, timeout=300) as http:
            while time.perf_counter() < deadline:
                with lock:
                    index = next(counter)
                outcome = send(http, world, index)
                with lock:
                    outcomes.append(outcome)
                    last_end[0] = max(last_end[0], time.perf_counter())

    cpu0, server0 = time.process_time(), server.cpu_seconds()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase = Phase(name, clients, last_end[0] - began, outcomes)
    phase.server_cpu = server.cpu_seconds() - server0
    phase.client_cpu = time.process_time() - cpu0
    return phase


# ------------------------------------------------------------------ in-process
CHECK_STAGES: tuple[tuple[str, str], ...] = (
    ("get_grantee", "registry.get_grantee"),
    ("load_image", "load_image (decode, hash)"),
    ("index.refresh", "index.refresh (follow the log)"),
    ("index cache save", "  of which: encrypted index cache rewrite"),
    ("engine.detect", "engine.detect (YuNet)"),
    ("engine.embed", "engine.embed (SFace, per face)"),
    ("index.search", "index.search (FAISS, 1,000 subjects)"),
    ("prompt aliases", "prompt aliases (AliasMatcher over all subjects)"),
    ("grants", "grants + revocations read"),
    ("decide", "policy.decide"),
    ("record_decision", "record_decision (sign, log append, commit)"),
    ("checkpoint", "registry.checkpoint (root of whole log, sign)"),
)


class InProcess:
    """The same jobs through ``Gateway.check`` in this process, one at a time, no HTTP,
    in blocks interleaved with the HTTP blocks; stages timed by :func:`instrumented`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.registry = Registry.open(world.home)
        self.gateway = Gateway(self.registry, get_engine("sface"))
        self.stopwatch = Stopwatch()
        self.phase = Phase("in-process Gateway.check (baseline: no HTTP)", 1, 0.0, [])
        self.phase.client_cpu = 0.0

    def block(self, seconds: float, start_at: int) -> int:
        """Check jobs from ``start_at`` on for ``seconds``; returns how many."""
        world, phase = self.world, self.phase
        size0 = self.registry.log_size()
        done = 0
        with instrumented(self.gateway, self.stopwatch):
            began, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - began < seconds:
                index = start_at + done
                job = world.jobs[index % len(world.jobs)]
                request = CheckRequest(world.grantee_ids[job.key], CHECK_PURPOSE,
                                       [job.image] if job.image else [], job.prompt)
                t0 = time.perf_counter()
                receipt = self.gateway.check(request)
                phase.outcomes.append(Outcome(job.kind, index, time.perf_counter() - t0, 200,
                                              receipt.allowed, receipt.subjects,
                                              receipt.log_index is not None))
                done += 1
            phase.seconds += time.perf_counter() - began
            phase.client_cpu += time.process_time() - cpu0
        phase.log_added += self.registry.log_size() - size0
        return done

    def finish(self) -> Phase:
        """The merged phase with its per-stage table; closes the registry."""
        self.registry.close()
        phase, stopwatch = self.phase, self.stopwatch
        n = max(1, len(phase.outcomes))
        total = sum(o.latency for o in phase.outcomes)
        rows: list[list[object]] = []
        for label, text in CHECK_STAGES:
            spent = stopwatch.total(label)
            rows.append([text, f"{stopwatch.count(label) / n:.2f}", f"{1000 * spent / n:.2f}",
                         f"{100 * spent / total:.0f}%" if total else "-"])
        known = sum(stopwatch.total(label) for label, _ in CHECK_STAGES
                    if label != "index cache save")
        rows.append(["other (Receipt, facts, sessions, wrappers)", "",
                     f"{1000 * (total - known) / n:.2f}",
                     f"{100 * (total - known) / total:.0f}%" if total else "-"])
        rows.append(["Gateway.check, total", "1.00", f"{1000 * total / n:.2f}", "100%"])
        phase.stages = rows
        return phase


def merge(phases: list[Phase]) -> Phase:
    """One phase from interleaved blocks of the same kind."""
    first = phases[0]
    merged = Phase(first.name, first.clients, sum(p.seconds for p in phases),
                   [o for p in phases for o in p.outcomes])
    merged.server_cpu = sum(p.server_cpu for p in phases)
    merged.client_cpu = sum(p.client_cpu for p in phases)
    merged.log_added = sum(p.log_added for p in phases)
    return merged


# ------------------------------------------------------------------ verification
def verify(phase: Phase, world: World) -> dict[str, Any]:
    """Count 5xx, other errors, allows without a grant, wrong refusals, subject mismatches."""
    if phase.outcomes and phase.outcomes[0].kind == "healthz":
        return _verify_health(phase)
    result: dict[str, Any] = {"5xx": 0, "other_errors": 0, "allowed_without_grant": 0,
                              "wrong_refusals": 0, "subject_mismatches": 0, "unlogged": 0,
                              "examples": []}
    for o in phase.outcomes:
        job = world.jobs[o.job % len(world.jobs)]
        if o.status != 200:
            key = "5xx" if o.status >= 500 else "other_errors"
            result[key] += 1
            result["examples"].append(f"{o.status} on {job.kind}: {o.error}")
            continue
        _check_answer(o, job, world, result)
    return result


def _verify_health(phase: Phase) -> dict[str, Any]:
    """A healthz phase: only errors count."""
    errors = [o for o in phase.outcomes if o.status != 200 or o.error]
    return {"5xx": sum(1 for o in errors if o.status >= 500),
            "other_errors": sum(1 for o in errors if o.status < 500),
            "allowed_without_grant": 0, "wrong_refusals": 0, "subject_mismatches": 0,
            "unlogged": 0, "examples": [o.error for o in errors[:3]]}


def _check_answer(o: Outcome, job: Job, world: World, result: dict[str, Any]) -> None:
    """Count one 200 answer against what the job should get (allow, subjects, logged)."""
    if o.allowed and not job.expected_allowed:
        result["allowed_without_grant"] += 1
        result["examples"].append(f"ALLOWED without grant: {job.kind} {job.image_name} "
                                  f"prompt={job.prompt!r} key={job.key}")
    elif not o.allowed and job.expected_allowed:
        result["wrong_refusals"] += 1
        if len(result["examples"]) < 8:
            result["examples"].append(f"refused, expected allow: {job.kind} "
                                      f"{job.image_name} prompt={job.prompt!r}")
    # A grantee sees "a registered person" for a subject it holds no grant from
    # (the service redacts receipts); an allowed job's subjects are all granted.
    granted = {s for j in world.jobs if j.key == job.key and j.expected_allowed
               for s in j.expected_subjects}
    if set(o.subjects) != {s if s in granted else "a registered person"
                           for s in job.expected_subjects}:
        result["subject_mismatches"] += 1
        if len(result["examples"]) < 8:
            result["examples"].append(f"subjects {sorted(o.subjects)} != expected "
                                      f"{sorted(job.expected_subjects)}: {job.kind} "
                                      f"{job.image_name}")
    if not o.logged:
        result["unlogged"] += 1


def _phase_summary(phase: Phase, world: World) -> dict[str, Any]:
    latencies = [o.latency for o in phase.outcomes]
    n = len(latencies)
    summary: dict[str, Any] = {
        "name": phase.name,
        "clients": phase.clients,
        "seconds": phase.seconds,
        "requests": n,
        "per_s": n / phase.seconds if phase.seconds > 0 else float("nan"),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
        "server_cpu_ms_per_req": 1000 * phase.server_cpu / n if n else float("nan"),
        "client_cpu_ms_per_req": 1000 * phase.client_cpu / n if n else float("nan"),
        "log_added": phase.log_added,
        **verify(phase, world),
    }
    if phase.outcomes and phase.outcomes[0].kind != "healthz":
        kinds: dict[str, dict[str, Any]] = {}
        for kind in world.kinds:
            mine = [o for o in phase.outcomes if o.kind == kind]
            expected = next((j.expected_allowed for j in world.jobs if j.kind == kind), None)
            kinds[kind] = {
                "requests": len(mine),
                "allowed": sum(1 for o in mine if o.allowed),
                "expected_allowed": expected,
                "p50_ms": 1000 * percentile([o.latency for o in mine], 50),
            }
        summary["kinds"] = kinds
    if phase.stages:
        summary["stages"] = phase.stages
    return summary


def _log_size(home: Path) -> int:
    registry = Registry.open(home)
    try:
        return registry.log_size()
    finally:
        registry.close()


# ------------------------------------------------------------------ driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    seconds = args.seconds if args.seconds else sizes.check_seconds
    clients = max(1, int(args.clients))
    side = sizes.side_seconds
    faces_dir = getattr(args, "faces_dir", None)
    workdir = Path(tempfile.mkdtemp(prefix="consentry-bench-gateway-"))
    console.print(f"\n== gateway ==  workdir {workdir}")
    server: Server | None = None
    try:
        note("[setup] embedding real photos, registering 1,000 subjects, grants ...")
        engine = get_engine("sface")
        began = time.perf_counter()
        world = build_world(workdir / "home", engine, faces_dir, log=note)
        setup_s = time.perf_counter() - began
        server = Server(world.home, workdir / "server.log")
        note(f"[1/2] starting {' '.join(server.command[-6:])} ...")
        server.start()
        note(f"  server ready in {server.startup_seconds:.1f} s (index built from "
             f"{world.subjects_total} subjects' enrollments)")
        with httpx.Client(base_url=server.base, timeout=300) as http:  # warm-up, not timed
            for i in range(3):
                _post_check(http, world, i)
        position = 3

        def timed_http(name: str, n: int, secs: float,
                       send: Callable[[httpx.Client, World, int], Outcome]) -> Phase:
            nonlocal position
            assert server is not None
            size0 = _log_size(world.home)
            phase = http_phase(name, server, world, n, secs, send, position)
            phase.log_added = _log_size(world.home) - size0
            position += len(phase.outcomes)
            return phase

        blocks: dict[str, list[Phase]] = {}
        plan: list[tuple[str, int, float, Callable[[httpx.Client, World, int], Outcome]]] = [
            ("GET /healthz (baseline: HTTP floor)", clients, side / sizes.rounds, _get_health),
            ("POST /v1/check, 1 client", 1, side / sizes.rounds, _post_check),
            (f"POST /v1/check, {clients} clients", clients, seconds / sizes.rounds,
             _post_check),
        ]
        note(f"[1/2] {sizes.rounds} rounds of: GET /healthz with {clients} clients (baseline: "
             f"HTTP floor) {side / sizes.rounds:.1f} s; POST /v1/check with 1 client "
             f"{side / sizes.rounds:.1f} s; in-process Gateway.check (baseline: no HTTP) "
             f"{side / sizes.rounds:.1f} s; POST /v1/check with {clients} clients "
             f"{seconds / sizes.rounds:.1f} s ...")
        inproc = InProcess(world)
        for _ in range(sizes.rounds):
            for name, n, secs, send in plan:
                blocks.setdefault(name, []).append(timed_http(name, n, secs, send))
                if name == "POST /v1/check, 1 client":
                    position += inproc.block(side / sizes.rounds, position)
        phases = [merge(blocks[name]) for name, _n, _s, _send in plan]
        phases.append(inproc.finish())
        server.stop()
        server_problems = server.log_problems()
        note("[2/2] overhead: run_job on the tiny pipeline and the 512 px stand-in ...")
        over = overhead(world, workdir, sizes, args.torch_threads)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summaries = [_phase_summary(p, world) for p in phases]
    result: dict[str, Any] = {
        "sizes": asdict(sizes),
        "clients": clients,
        "check_seconds": seconds,
        "world": {
            "source": world.source,
            "subjects_total": world.subjects_total,
            "real_registered": world.real_registered,
            "real_with_probe": world.real_with_probe,
            "fillers": world.fillers,
            "granted_subjects": world.granted_subjects,
            "grants": world.grants,
            "unregistered_photos": world.unregistered_photos,
            "job_mix_size": len(world.jobs),
            "job_kinds": world.kinds,
            "job_mix_counts": dict(Counter(j.kind for j in world.jobs)),
            "notes": world.notes,
            "stats": world.stats,
            "setup_seconds": setup_s,
        },
        "server": {"command": [*server.command[:-4], "--home", "HOME", "--port", "PORT"]
                   if server else [],
                   "startup_seconds": server.startup_seconds if server else None,
                   "log_problem_lines": server_problems[:20]},
        "phases": summaries,
        "overhead": over,
        "sd15_estimate": sd15_estimate(over, args.sd15_seconds),
        "load_average_at_end": load_average(),
    }
    report(result)
    return result
