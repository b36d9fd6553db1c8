"""The tables of ``python -m bench gateway``: load, in-process checks, overhead, SD 1.5.

:func:`report` prints what :func:`bench.gateway.run` measured; it reads the result
dict only (nothing is measured here). The overhead stages' labels and the step count
the SD 1.5 references are scaled to (:data:`SD15_STEPS`) are defined here.
"""

from __future__ import annotations

from typing import Any

from bench._common import note, table

__all__ = ["OVERHEAD_STAGES", "SD15_STEPS", "report"]

SD15_STEPS = 25
"""The step count every stated SD 1.5 time is scaled to (see ``bench.gateway``)."""

OVERHEAD_STAGES: tuple[tuple[str, str], ...] = (
    ("pre-check", "pre-check: load input, faces, aliases, grants, policy"),
    ("pipeline", "PIPELINE CALL (backend)"),
    ("post png", "outputs to PNG (gate.release.png)"),
    ("post load", "post-check: load_image of the output PNGs"),
    ("post faces", "post-check: faces on the outputs (detect + embed + search)"),
    ("post grants", "post-check: grants + revocations re-read"),
    ("post decide", "post-check: policy.decide"),
    ("record", "log decision (record_decision + checkpoint)"),
    ("sign", "sign C2PA (checkpoint, proof, manifest, sign_output)"),
    ("other", "other: input resize for img2img, facts, receipts"),
)


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _model_text(st: dict[str, Any]) -> str:
    model = st["filler_model"]
    if not model["identities"]:
        return "identity centres isotropic (too few real identities to fit; see the notes)"
    return (f"from a two-level Gaussian fitted to {model['photos']} real sface embeddings\n"
            f"  of {model['identities']} identities (identity centre ~ N(mean, between cov), "
            "vector = centre + N(0, within cov); both shrunk "
            f"{model['shrinkage']} towards isotropic)")


def _sources(st: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in st.get("stranger_sources", {}).items()) or "none"


def lookalike_table(st: dict[str, Any]) -> None:
    """Table 1b: sent photos whose face matches a subject that is not theirs (numpy)."""
    look = st["lookalikes"]
    sent = look["sent_photos"]
    rows = [[kind, f"{n} / {sent}", f"{100 * n / sent:.1f}%" if sent else "-"]
            for kind, n in look["photos_matching"].items()]
    table(
        "1e. Look-alikes: sent photos (probes + unregistered) with a face at or above the "
        f"threshold {look['threshold']:.4f} against a subject that is not theirs",
        ["falsely matched subject", "sent photos", "share"],
        rows,
        caption=("Plain numpy on the engine's embeddings (best cosine over the subject's "
                 "enrolled vectors), not the gateway; each is a refusal caused by a look-alike\n"
                 "(counted by table 1a as a wrong refusal when the job should be allowed). "
                 f"Real impostor pairs (sent photo vs another real subject): "
                 f"{look['real_hits']}/{look['real_pairs']:,} at or above the threshold, "
                 f"p = {100 * look['real_rate']:.3f}%, so 1-(1-p)^{look['subjects'] - 1:,} = "
                 f"{100 * look['expected_any']:.1f}% of sent photos would match someone among "
                 "real people alone\n(the synthetic fillers stand in for them; bench faces "
                 "table 4 has the full 1:N measurement). Examples: "
                 + ("; ".join(look["examples"]) or "none")),
    )


def report(result: dict[str, Any]) -> None:
    w = result["world"]
    st = w["stats"]
    note(
        f"\nSubjects: {w['subjects_total']:,} = {w['real_registered']} real identities enrolled "
        f"from real photos ({w['real_with_probe']} with a held-out probe photo) + "
        f"{w['fillers']} fillers.\n"
        f"  real: {w['source']}; sface embeddings of the labelled face, stored with "
        "biometrics.enroll (enroll_photos' storage step; its quality gates refuse group photos).\n"
        f"  fillers: Registry.add_subject (name + alias) and biometrics.enroll: first "
        f"{st['stranger_fillers']} REAL strangers (one embedding each: "
        f"{_sources(st)}),\n  then 3 SYNTHETIC "
        f"embeddings each, {_model_text(st)};\n"
        f"  within-identity noise scaled x{st['filler_model']['within_scale']:.2f} to match the "
        "genuine mean cosine. NOTHING IS SCREENED: fillers are drawn once and kept, and no "
        "probe or unregistered photo is dropped for resembling a subject\n"
        f"  (max filler-vs-sent cosine {st['filler_vs_sent_max_cos']:.3f}; look-alike matches: "
        "table 1e).\n"
        "  Why not augmented real photos: a recognizer sees the same person through "
        "augmentation, so they would be the same few people registered many times.\n"
        f"  mean cosine genuine / impostor pairs: real {st['real_pairs_mean_cos']['genuine']:.2f}"
        f" / {st['real_pairs_mean_cos']['impostor']:.3f}, fillers "
        f"{st['filler_pairs_mean_cos']['genuine']:.2f} / "
        f"{st['filler_pairs_mean_cos']['impostor']:.3f}, filler vs real "
        f"{st['filler_vs_real_mean_cos']:.3f}; impostor pairs at or above the threshold: real "
        f"{100 * st['real_impostor_share_at_threshold']:.3f}%,\n"
        f"  filler-filler {100 * st['filler_share_at_threshold']:.3f}%, filler-real "
        f"{100 * st['filler_vs_real_share_at_threshold']:.3f}%.\n"
        f"Grants: 'Studio A' holds {w['grants']} grants (restore+generate) covering "
        f"{w['granted_subjects']} subjects (every other probed real identity, every other "
        "filler); 'Studio B' none.\n"
        f"Setup {w['setup_seconds']:.1f} s (embedding {st['embed_seconds']:.1f} s, registry "
        f"{st['enroll_seconds']:.1f} s, grants {st['grant_seconds']:.1f} s); log "
        f"{st['log_size_after_setup']:,} entries after setup."
    )
    for line in w["notes"]:
        note(f"  note: {line}")
    kinds_rows = [[k, w["job_mix_counts"].get(k, 0), d] for k, d in w["job_kinds"].items()]
    table(f"Job mix ({w['job_mix_size']} jobs, shuffled, cycled; purpose 'restore'; "
          "ground truth from the photo labels)", ["kind", "jobs", "what and expected verdict"],
          kinds_rows)

    short = {"GET /healthz (baseline: HTTP floor)": "healthz (BASELINE: HTTP floor)",
             "in-process Gateway.check (baseline: no HTTP)": "in-process check (BASELINE)"}
    rows, crows = [], []
    for p in result["phases"]:
        name = short.get(p["name"], p["name"].replace("POST ", ""))
        http = "in-process" not in p["name"]
        rows.append([name, p["clients"], _f(p["seconds"], 1), p["requests"], _f(p["per_s"], 1),
                     _f(p["p50_ms"], 1), _f(p["p95_ms"], 1), _f(p["p99_ms"], 1),
                     _f(p["server_cpu_ms_per_req"], 1) if http else "-",
                     _f(p["client_cpu_ms_per_req"], 1),
                     f"+{p['log_added']:,}"])
        crows.append([name, p["requests"], p["5xx"], p["other_errors"],
                      p["allowed_without_grant"], p["wrong_refusals"], p["subject_mismatches"],
                      p["unlogged"]])
    srv = result["server"]
    table(
        "1. Gateway under load: real `consentry serve` (uvicorn, subprocess) on loopback, "
        f"{result['world']['subjects_total']:,} subjects, SQLite; httpx client threads in the "
        "bench process",
        ["phase", "clients", "s", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms",
         "server CPU ms/req", "client CPU ms/req", "log +"],
        rows,
        caption=(
            f"Server started in {_f(srv['startup_seconds'], 1)} s. req/s = requests / (phase "
            "start to last completion); latency measured per request at the client; server CPU "
            "= the server process's\nuser+system time over the phase / requests. The service "
            "runs each check under one lock (faces_lock), so checks are serial in the server:\n"
            "throughput ~ 1 / service time, and p50 with N clients ~ N x service time. Each "
            "check appends one decision to the log and signs a checkpoint ('log +': entries "
            "appended)."
        ),
    )
    table(
        "1a. Correctness of every answer against the ground truth",
        ["phase", "requests", "5xx", "other non-200", "ALLOWED w/o grant", "wrong refusals",
         "subject mismatches", "not logged"],
        crows,
        caption=(
            "'ALLOWED w/o grant' = allowed although a registered subject involved (face or "
            "prompt) has no grant for the caller: must be 0, like 5xx. 'wrong refusals' = refused\n"
            "although every involved subject is granted or none is registered. 'subject "
            "mismatches' = the receipt's subjects differ from the labels. 'not logged' = no "
            "log_index."
        ),
    )
    lookalike_table(result["world"]["stats"])
    load = next(p for p in result["phases"] if p["name"].startswith("POST") and p["clients"] ==
                result["clients"] and "1 client" not in p["name"])
    single = next(p for p in result["phases"] if p["name"] == "POST /v1/check, 1 client")
    health = next(p for p in result["phases"] if p["name"].startswith("GET /healthz"))
    inproc = next(p for p in result["phases"] if p["name"].startswith("in-process"))
    ratio_rows = [
        ["check req/s (N clients) / in-process checks/s", _f(load["per_s"] / inproc["per_s"], 2),
         "1.0 = HTTP costs no throughput (the server is serial per check)"],
        ["check p50 (1 client) / in-process p50", _f(single["p50_ms"] / inproc["p50_ms"], 2),
         "HTTP + multipart + auth on one request"],
        ["check p50 (1 client) - in-process p50, ms", _f(single["p50_ms"] - inproc["p50_ms"], 1),
         ""],
        ["healthz req/s / check req/s (N clients)", _f(health["per_s"] / load["per_s"], 1),
         "how far the check is above the HTTP floor"],
        ["check p50 / healthz p50 (N clients)", _f(load["p50_ms"] / health["p50_ms"], 1), ""],
        ["check p95 / p50 (N clients)", _f(load["p95_ms"] / load["p50_ms"], 2),
         "queueing behind the lock"],
    ]
    table("1b. Ratios against the baselines measured in this run", ["ratio", "value", "meaning"],
          ratio_rows)
    krows = []
    in_kinds = inproc.get("kinds", {})
    for kind, k in load.get("kinds", {}).items():
        mine = in_kinds.get(kind, {})
        krows.append([kind, k["requests"], k["allowed"],
                      "allow" if k["expected_allowed"] else "refuse", _f(k["p50_ms"], 1),
                      mine.get("requests", 0), _f(mine.get("p50_ms", float("nan")), 1)])
    table(f"1c. By kind: {load['name']}, and the in-process baseline",
          ["kind", "requests", "allowed", "expected", "p50 ms", "in-process checks",
           "in-process p50 ms"], krows,
          caption="A job with a prompt pays for AliasMatcher being rebuilt from every subject "
                  "on each check (table 1d).")
    table(f"1d. Gateway.check cost by stage, in-process ({inproc['requests']} checks, wrappers on "
          "the live objects; nested rows indented)",
          ["stage", "calls/check", "ms/check", "% of check"], inproc.get("stages", []))
    problems = [(p["name"], e) for p in result["phases"] for e in p["examples"]]
    if problems:
        note("\nExamples of problems found:")
        for name, e in problems[:12]:
            note(f"  [{name}] {e}")
    if srv["log_problem_lines"]:
        note("\nServer log lines reporting errors (first 5):")
        for line in srv["log_problem_lines"][:5]:
            note(f"  {line}")

    over = result["overhead"]
    labels = list(over["jobs"])
    orows = []
    for key, text in OVERHEAD_STAGES:
        orows.append([text, *(_f(1000 * over["jobs"][lab]["median_s"][key], 1) for lab in labels)])
    orows.append(["TOTAL run_job", *(_f(1000 * over["jobs"][lab]["median_s"]["total"], 1)
                                     for lab in labels)])
    orows.append(["GATEWAY OVERHEAD (total - pipeline)",
                  *(_f(1000 * over["jobs"][lab]["median_s"]["overhead"], 1) for lab in labels)])
    orows.append(["overhead / pipeline",
                  *(_f(over["jobs"][lab]["overhead_over_pipeline"], 2) if
                    over["jobs"][lab]["median_s"]["pipeline"] > 0.001 else "n/a (stand-in)"
                    for lab in labels)])
    orows.append(["allowed and signed, every run",
                  *("yes" if over["jobs"][lab]["allowed_all"] and over["jobs"][lab]["outputs"]
                    else "NO: " + "; ".join(over["jobs"][lab]["reasons_if_refused"])[:60]
                    for lab in labels)])
    table(
        "2. Gateway overhead per job: run_job, median ms over "
        f"{over['jobs'][labels[0]]['runs']} runs after a warm-up (in-process, "
        "1,000-subject registry)",
        ["stage", *labels],
        orows,
        caption=(
            f"tiny = build_tiny_pipeline + the real DiffusersBackend (random weights, real code "
            f"paths), 64x64, {over['steps']} steps (restore: img2img, strength 0.6), torch threads "
            f"{over['torch_threads']};\nthe pipeline call is timed by a wrapper around the "
            "backend. Stand-in = a backend "
            "returning a real 512x512 face photo of the granted subject at once, so that the "
            "post-check, PNG and signing work on SD 1.5's output size.\nStages are timed by "
            "wrappers on the live Gateway / module objects; 'other' = total - the listed stages. "
            f"Tiny pipeline built and loaded in {_f(over['tiny_build_and_load_s'], 1)} s (not "
            "in the rows)."
        ),
    )
    erows = []
    for row in result["sd15_estimate"]:
        erows.append([row["reference"], _f(row["pipeline_s"], 2),
                      _f(1000 * row["generate_overhead_s"], 0),
                      f"{100 * row['generate_ratio']:.1f}%",
                      _f(1000 * row["restore_overhead_s"], 0),
                      f"{100 * row['restore_ratio']:.1f}%"])
    table(
        f"3. ESTIMATE for SD 1.5, 512x512, {SD15_STEPS} steps: measured gateway overhead at 512 px "
        "(stand-in rows of table 2) / an ASSUMED pipeline time",
        ["assumed SD 1.5 pipeline (not measured here)", f"pipeline s ({SD15_STEPS} steps)",
         "generate overhead ms", "generate overhead/pipeline", "restore overhead ms",
         "restore overhead/pipeline"],
        erows,
        caption="Assumed pipeline times (scaled linearly to "
                f"{SD15_STEPS} steps where the source used another count; this understates "
                "them a little, so the ratios are a little high):\n"
                + "\n".join(f"  {r['reference']}: {r['source']}"
                            for r in result["sd15_estimate"])
                + "\nThe overhead is this machine's CPU time (face detection and embedding run on "
                  "the CPU beside a GPU pipeline too); a faster host CPU lowers it.",
    )
    note(f"\nload average (1/5/15 min) at end: "
         f"{', '.join(f'{x:.2f}' for x in result['load_average_at_end'])}")
