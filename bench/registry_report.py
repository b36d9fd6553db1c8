"""The tables of ``python -m bench registry``: grants/s, log verify, proofs, profiles.

:func:`report` prints what :func:`bench.registry.run` measured; it reads the result
dict only (nothing is measured here), so a saved ``registry.json`` prints the same.
The targets the tables compare against are defined here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench import registry_whatif as whatif
from bench._common import note, table

if TYPE_CHECKING:
    from bench.registry import Sizes

__all__ = ["SQLITE_TARGET_GPS", "VERIFY_TARGET_N", "VERIFY_TARGET_S", "report"]

SQLITE_TARGET_GPS = 500.0  # grants/s on SQLite
VERIFY_TARGET_N = 100_000
VERIFY_TARGET_S = 30.0


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _build_caption(build: dict[str, Any]) -> str:
    return (
        "How the log was built: genesis + subject + grantee, then grant entries. The first "
        f"{build['append_path_entries']:,} went through\n"
        f"Registry.{whatif.APPEND_NAME}(session, row, 'grant', "
        "row.id, Envelope.sign(statement_of(row), [key])) inside db.write() "
        f"({_f(build['append_path_per_s'], 0)} entries/s,\n"
        f"{build['entries_per_transaction']:,} per transaction); the other "
        f"{build['bulk_path_entries']:,} were signed the same way (Grant row as Registry.grant "
        "builds it,\nstatement_of, Envelope.sign, leaf_bytes, merkle.leaf_hash) and written with "
        f"executemany INSERTs under db.write() ({_f(build['bulk_path_per_s'], 0)} entries/s).\n"
        "A signed checkpoint was taken at every size used here; verify_log checks every entry "
        "(hash, signature, row == statement)\nand every checkpoint. CPU = this process; wall - "
        "CPU is time spent waiting for a core. peak RSS = the bench process's peak so far."
    )


def report(result: dict[str, Any], sizes: Sizes) -> None:
    """Print every table of a run's ``result`` (see :func:`bench.registry.run`)."""
    _grant_table(result, sizes)
    _verify_table(result)
    _proof_tables(result)
    note(f"\nload average (1/5/15 min) at end: "
         f"{', '.join(f'{x:.2f}' for x in result['load_average_at_end'])}")
    _grant_profiles(result)
    _whatif_tables(result)
    _verify_profile(result)


def _grant_table(result: dict[str, Any], sizes: Sizes) -> None:
    rows: list[list[object]] = []
    for g in result["grants"]:
        if "skipped" in g:
            rows.append([g["backend"], "skipped: " + g["skipped"], "", "", "", "", "", "", ""])
            continue
        ours, base = g["ours"], g["baseline"]
        target = SQLITE_TARGET_GPS if g["backend"] == "SQLite" else None
        met = "-" if target is None else ("yes" if ours["per_s"] >= target else "NO")
        rows.append([g["backend"], "Registry.grant (ours)", _f(ours["per_s"]),
                     _f(ours["cpu_ms_per_op"], 2), _f(ours["p50_ms"], 2), _f(ours["p99_ms"], 2),
                     _f(g["ratio_baseline_over_ours"], 1) + "x",
                     f">= {target:.0f}/s" if target else "-", met])
        rows.append([g["backend"], "plain INSERT (baseline)", _f(base["per_s"]),
                     _f(base["cpu_ms_per_op"], 2), _f(base["p50_ms"], 2), _f(base["p99_ms"], 2),
                     "", "", ""])
    table(
        f"1. Grants per second, one transaction per grant: N={sizes.grants} timed after "
        f"{sizes.warmup} warm-up, ours and baseline interleaved in {sizes.rounds} rounds",
        ["backend", "method", "grants/s", "client CPU ms/grant", "p50 ms", "p99 ms",
         "baseline/ours", "target", "met"],
        rows,
        caption=(
            "ours = Registry.grant(subject, grantee, ['restore'], not_after=...): read subject, "
            "read grantee, sign (Ed25519), append log leaf, commit.\nbaseline = the same Grant "
            "rows pre-built and unsigned, SQLAlchemy core insert + commit, one per transaction, "
            "same engine settings,\nno signing, no log. SQLite: WAL, synchronous=NORMAL, temp "
            "file. " + next((g["server"] for g in result["grants"] if "server" in g), "")
        ),
    )


def _verify_table(result: dict[str, Any]) -> None:
    build = result["build"]
    vrows = []
    for v in result["verify"]:
        target = f"< {VERIFY_TARGET_S:.0f} s" if v["entries"] == VERIFY_TARGET_N else "-"
        met = ("yes" if v["wall_s"] < VERIFY_TARGET_S else "NO") if target != "-" else "-"
        vrows.append([f"{v['entries']:,}", _f(v["wall_s"], 2), _f(v["cpu_s"], 2),
                      _f(v["us_per_entry"], 0), _f(v["cpu_us_per_entry"], 0),
                      _f(v["process_peak_rss_mb"], 0),
                      "yes" if v["ok"] else "NO: " + "; ".join(v["problems"]),
                      v["checkpoints_verified"], target, met])
    table(
        "2. log verify (Registry.verify_log) on SQLite",
        ["entries", "wall s", "CPU s", "wall us/entry", "CPU us/entry", "peak RSS MB",
         "ok", "checkpoints", "target", "met"],
        vrows,
        caption=_build_caption(build),
    )


def _proof_tables(result: dict[str, Any]) -> None:
    irows, crows = [], []
    for p in result["proofs"]:
        i, c = p["inclusion"], p["consistency"]
        irows.append([f"{p['n']:,}", f"{i['hashes_min']}-{i['hashes_max']}", i["bytes_max"],
                      i["bound_bytes"], "yes" if i["within_bound"] else "NO",
                      i["bundle_json_bytes_max"], _f(i["generate_ms_median"], 1),
                      _f(i["load_leaf_hashes_ms"], 1), _f(i["offline_verify_ms_median"], 3)])
        crows.append([f"{p['n']:,}", f"{c['old_size']:,} -> {p['n']:,}", c["hashes"], c["bytes"],
                      c["bound_bytes"], "yes" if c["within_bound"] else "NO",
                      c["bundle_json_bytes"], _f(c["generate_ms_median"], 1),
                      _f(c["offline_verify_ms_median"], 3)])
    table(
        "3a. Inclusion proofs (registry.inclusion_proof(i, checkpoint of size N); "
        "offline: verify_inclusion_bundle)",
        ["N", "hashes", "proof bytes", "bound 32*ceil(log2 N)", "within", "bundle JSON bytes",
         "generate ms", "of which load hashes ms", "offline verify ms"],
        irows,
        caption=("indexes: 0, N-1 and 3 random; hashes = min-max path length; generate and verify "
                 "are medians (verify: 50 calls per index, incl. checkpoint signature);\n"
                 "load hashes = registry.log.leaf_hashes(N) alone, median of 3."),
    )
    table(
        "3b. Consistency proofs (registry.consistency_proof(N//2, N); offline: "
        "verify_consistency_bundle)",
        ["N", "sizes", "hashes", "proof bytes", "bound 32*(ceil(log2 N)+1)", "within",
         "bundle JSON bytes", "generate ms", "offline verify ms"],
        crows,
        caption="generate: median of 3; verify: median of 50 (incl. both checkpoint signatures).",
    )


def _grant_profiles(result: dict[str, Any]) -> None:
    for g in result["grants"]:
        prof = g.get("profile")
        if prof:
            table(f"profile: Registry.grant on {g['backend']} ({prof['grants']} grants under "
                  "cProfile; cumulative, nested rows overlap)",
                  ["function", "calls/grant", "cum ms/grant", "% of grant"], prof["breakdown"],
                  caption=f"raw profile: {prof['prof_file']}")
            table(f"profile: top own-time functions, Registry.grant on {g['backend']}",
                  ["function", "calls/grant", "own ms/grant", "cum ms/grant", "% own"],
                  prof["top_tottime"])


def _whatif_tables(result: dict[str, Any]) -> None:
    whatif_rows: list[list[object]] = []
    for g in result["grants"]:
        lean = g.get("whatif_lean")
        if lean:
            ours = g["ours"]
            whatif_rows.append([f"{g['backend']}: Registry.grant (as measured in 1.)",
                                _f(ours["per_s"]), _f(ours["cpu_ms_per_op"], 2),
                                _f(ours["p50_ms"], 2), "-"])
            whatif_rows.append([f"{g['backend']}: prototype, 1 transaction + core SQL",
                                _f(lean["per_s"]), _f(lean["cpu_ms_per_op"], 2),
                                _f(lean["p50_ms"], 2),
                                f"ok ({lean['verify_log_entries']:,} entries)"
                                if lean["verify_log_ok"] else "NO: " + "; ".join(lean["problems"])])
    for g in result["grants"]:
        if g.get("components"):
            table(f"Registry.grant cost by step on {g['backend']}, timed directly (no profiler; "
                  "best of 5 interleaved blocks of up to 100 calls)",
                  ["step", "ms/grant", "% of grant", "how"], g["components"])
    if whatif_rows:
        table("what-if A: grant path as one transaction with core SQL (bench/registry_whatif.py"
              " lean_grant; run after 1., same DB)",
              ["variant", "grants/s", "client CPU ms/grant", "p50 ms", "verify_log of the DB"],
              whatif_rows)


def _verify_profile(result: dict[str, Any]) -> None:
    vprof = result.get("verify_profile")
    if vprof and vprof.get("components"):
        table(f"verify_log cost per entry by step, timed directly (no profiler), log of "
              f"{vprof['entries']:,} entries",
              ["step", "us/entry", "% of sum", "how"], vprof["components"])
    if vprof:
        table(f"profile: verify_log at {vprof['entries']:,} entries (cumulative per entry, "
              "nested rows overlap)",
              ["function", "calls/entry", "cum ms/entry", "% of verify"], vprof["breakdown"],
              caption=f"raw profile: {vprof['prof_file']}")
        table("profile: top own-time functions, verify_log",
              ["function", "calls/entry", "own ms/entry", "cum ms/entry", "% own"],
              vprof["top_tottime"])
