"""Consentry benchmarks: ``python -m bench [NAME ...] [--quick]``.

Each sub-benchmark is a module listed in :data:`bench.__main__.BENCHMARKS`
exposing ``run(args) -> dict`` (it prints its own tables; the dispatcher
writes the returned dict to ``bench/out/<name>.json``).
"""
