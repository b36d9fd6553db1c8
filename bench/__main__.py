"""Dispatch sub-benchmarks by name: ``python -m bench registry``; no name runs all.

To add a benchmark, add ``"name": "bench.module"`` to :data:`BENCHMARKS`; the
module defines ``run(args: argparse.Namespace) -> dict`` and may define
``add_arguments(parser)`` for options of its own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

from bench._common import DEFAULT_OUT, machine_info, print_header, write_json

BENCHMARKS: dict[str, str] = {
    "registry": "bench.registry",
    "faces": "bench.faces",
    "provenance": "bench.provenance",
    "fidelity": "bench.fidelity",
    "gateway": "bench.gateway",
    "aliases": "bench.aliases",
    "attacks": "bench.attacks",
    "face_scan": "bench.face_scan",
    "fusion": "bench.fusion",
    "serve": "bench.serve",
    "log": "bench.log",
    "sequencer": "bench.sequencer",
    "marks": "bench.marks",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(BENCHMARKS[name])
    except ImportError as exc:  # a benchmark whose extras are not installed
        print(f"[bench] {name}: not available ({exc})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"benchmarks to run (default: all available): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for iterating")
    parser.add_argument(
        "--profile", action="store_true",
        help="also run cProfile over the hot paths and print where the time goes",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output folder (default {DEFAULT_OUT})"
    )
    modules: dict[str, ModuleType] = {}
    for name in BENCHMARKS:
        module = _load(name)
        if module is not None:
            modules[name] = module
            if hasattr(module, "add_arguments"):
                module.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    missing = [n for n in args.names if n not in modules]
    if missing:
        parser.error(f"benchmark {missing[0]!r} is not available here (see message above)")
    names = args.names or list(modules)
    if not names:
        parser.error("no benchmark is available")

    info = machine_info()
    print_header(info, args.quick)
    for name in names:
        began = time.perf_counter()
        result = modules[name].run(args)
        elapsed = time.perf_counter() - began
        result = {
            "benchmark": name,
            "quick": bool(args.quick),
            "machine": info,
            "total_seconds": round(elapsed, 2),
            **result,
        }
        path = write_json(args.out, name, result)
        print(f"\n[bench] {name}: {elapsed:.1f} s in all; results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
