"""Shared helpers: machine description, timing, plain-text tables, JSON output, profiles."""

from __future__ import annotations

import cProfile
import io
import json
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

DEFAULT_OUT = Path(__file__).resolve().parent / "out"

# Not a terminal (a pipe, a log file): wide enough that no table wraps.
console = Console(width=None if sys.stdout.isatty() else 220, highlight=False, markup=False,
                  emoji=False)


# ---------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": _version("SQLAlchemy"),
        "sqlmodel": _version("sqlmodel"),
        "cryptography": _version("cryptography"),
        "psycopg": _version("psycopg"),
        "load_average_at_start": load_average(),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def print_header(info: dict[str, Any], quick: bool) -> None:
    load = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"]) or "?"
    console.print(
        f"consentry bench  {'(QUICK run: small sizes) ' if quick else ''}{info['started_at']}\n"
        f"machine: nproc={info['nproc']}  cpu={info['cpu_model']}  "
        f"load average at start (1/5/15 min)={load}\n"
        f"python {info['python']} ({info['python_impl']}) on {info['platform']}\n"
        f"sqlite {info['sqlite']}  sqlalchemy {info['sqlalchemy']}  sqlmodel {info['sqlmodel']}  "
        f"cryptography {info['cryptography']}  psycopg {info['psycopg']}"
    )


# ---------------------------------------------------------------- timing
@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0

    def __iadd__(self, other: Timing) -> Timing:
        self.wall += other.wall
        self.cpu += other.cpu
        return self


@contextmanager
def timed() -> Iterator[Timing]:
    """Wall-clock and this process's CPU time of the block."""
    result = Timing()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.wall = time.perf_counter() - wall
        result.cpu = time.process_time() - cpu


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and minimum wall seconds of ``repeat`` calls of ``fn``."""
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples), min(samples)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# ---------------------------------------------------------------- output
def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
          caption: str | None = None) -> None:
    """Print ``title``, an ASCII table, then ``caption`` as plain lines (never markup)."""
    t = Table(box=box.ASCII, show_lines=False)
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    console.print()
    console.print(title, soft_wrap=True)
    console.print(t)
    if caption:
        console.print(caption, soft_wrap=True)


def note(text: str) -> None:
    console.print(text, soft_wrap=True)


def write_json(out_dir: Path, name: str, data: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path


# ---------------------------------------------------------------- profiles
@contextmanager
def profiled(path: Path | None) -> Iterator[cProfile.Profile]:
    """cProfile the block; dump the raw profile to ``path`` (``.prof``) when given."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield profiler
    finally:
        profiler.disable()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(path))


def cumulative_breakdown(
    profiler: cProfile.Profile,
    per: int,
    wanted: Sequence[tuple[str, str, str]],
    lines: dict[str, int] | None = None,
) -> tuple[float, list[list[object]]]:
    """Rows (label, calls per op, cumulative ms per op, % of total) for the functions in
    ``wanted`` = (label, file path suffix, function name); the first entry is the total.

    A suffix of ``~`` matches built-in functions whose name starts with ``name``;
    ``lines[label]``, when given, pins the label to the function defined on that line."""
    lines = lines or {}
    stats = pstats.Stats(profiler, stream=io.StringIO())
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    found: dict[str, tuple[int, float]] = {}
    for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in raw.items():
        for label, suffix, name in wanted:
            builtin = suffix == "~" and filename == "~" and func.startswith(name)
            named = func == name and filename.replace("\\", "/").endswith(suffix)
            if (builtin or named) and lines.get(label, _line) == _line:
                calls, cum = found.get(label, (0, 0.0))
                found[label] = (calls + nc, cum + ct)
    total = found.get(wanted[0][0], (0, 0.0))[1] or 1e-12
    rows: list[list[object]] = []
    for label, _suffix, _name in wanted:
        calls, cum = found.get(label, (0, 0.0))
        rows.append([label, f"{calls / per:.1f}", f"{cum / per * 1000:.3f}",
                     f"{100 * cum / total:.0f}%"])
    return total, rows


def top_functions(profiler: cProfile.Profile, per: int, limit: int = 12) -> list[list[object]]:
    """The ``limit`` functions with the most own (tottime) time, per operation."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-12
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:limit]
    rows: list[list[object]] = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in ranked:
        short = filename
        for marker in ("site-packages/", "/consentry/", "/bench/"):
            if marker in filename:
                short = filename.split(marker, 1)[1]
                short = ("consentry/" if marker == "/consentry/" else "") + short
                break
        rows.append([f"{short}:{line}({func})", f"{nc / per:.1f}", f"{tt / per * 1000:.3f}",
                     f"{ct / per * 1000:.3f}", f"{100 * tt / total:.0f}%"])
    return rows
