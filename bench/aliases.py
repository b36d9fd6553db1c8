"""Prompt aliases: attack classes matched, false refusals on ordinary prompts, speed.

``python -m bench aliases`` (or ``python -m bench.aliases``). The matcher of
consentry.gate.aliases against the baseline (the matcher before issue 11,
kept verbatim in bench/aliases_baseline.py), in the same run:

1. per attack class of issue 11, the share of attack prompts in which the
   attacked subject is found (every multi-part Latin name of the realistic set,
   ``--variants`` prompts per name and class; the misspelling class only over
   names of at least MIN_EDIT letters, which is all the matcher promises);
2. the false-refusal rate: the share of the ordinary corpus
   (bench.aliases_data.ordinary_prompts) in which any subject is found, against
   the realistic name set and against ~1,000 subjects; the refused prompts are
   listed;
3. microseconds per prompt over the corpus with ~1,000 subjects, and build time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench import aliases_baseline
from bench._common import DEFAULT_OUT, machine_info, note, print_header, table, write_json
from bench.aliases_data import (
    ATTACKS,
    attack_variants,
    ordinary_prompts,
    registered,
    scale_subjects,
)
from consentry.gate import aliases


class _Matcher(Protocol):
    def find(self, prompt: str) -> list[tuple[str, str]]: ...


Build = Callable[[list[tuple[str, list[str]]]], _Matcher]
MATCHERS: dict[str, Build] = {
    "baseline (before issue 11)": aliases_baseline.AliasMatcher,
    "skeleton matcher": aliases.AliasMatcher,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--variants",
        type=int,
        default=20,
        help="aliases: attack prompts per name and class (default 20)",
    )
    parser.add_argument(
        "--corpus", type=int, default=3000, help="aliases: ordinary prompts (default 3000)"
    )


def _attack_names() -> list[tuple[str, str]]:
    names = []
    for subject, aliases_of in registered():
        display = aliases_of[0]
        parts = display.replace("-", " ").split()
        if len(parts) >= 2 and display.isascii() and "." not in display:
            names.append((subject, display))
    return names


def _letters(name: str) -> int:
    return sum(c.isalpha() for c in name)


def attack_table(variants: int) -> list[dict[str, Any]]:
    names = _attack_names()
    built = {label: build(registered()) for label, build in MATCHERS.items()}
    rows: list[dict[str, Any]] = []
    for attack in ATTACKS:
        targets = names
        if attack == "one-letter misspelling":
            targets = [(s, n) for s, n in names if _letters(n) >= aliases.MIN_EDIT]
        prompts = [(s, p) for s, n in targets for p in attack_variants(n, attack, variants)]
        row: dict[str, Any] = {"attack": attack, "prompts": len(prompts)}
        for label, matcher in built.items():
            hits = sum(1 for s, p in prompts if s in {x for x, _ in matcher.find(p)})
            row[label] = hits / len(prompts)
            if label == "skeleton matcher":
                row["missed"] = [p for s, p in prompts if s not in {x for x, _ in matcher.find(p)}]
        rows.append(row)
    return rows


def false_refusals(
    corpus: Sequence[str], subjects: list[tuple[str, list[str]]]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, build in MATCHERS.items():
        matcher = build(subjects)
        refused = [(p, matcher.find(p)) for p in corpus]
        refused = [(p, f) for p, f in refused if f]
        out[label] = {"rate": len(refused) / len(corpus), "refused": refused}
    return out


def _only(results: dict[str, dict[str, Any]], ours: str, base: str) -> list[str]:
    theirs = {p for p, _ in results[base]["refused"]}
    return [p for p, _ in results[ours]["refused"] if p not in theirs]


def speed(
    corpus: Sequence[str], subjects: list[tuple[str, list[str]]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, build in MATCHERS.items():
        began = time.perf_counter()
        matcher = build(subjects)
        build_ms = (time.perf_counter() - began) * 1000
        for prompt in corpus[:200]:  # warm caches
            matcher.find(prompt)
        rounds = []
        for _ in range(3):
            began = time.perf_counter()
            for prompt in corpus:
                matcher.find(prompt)
            rounds.append((time.perf_counter() - began) / len(corpus) * 1e6)
        out[label] = {"build_ms": build_ms, "us_per_prompt": statistics.median(rounds)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = 5 if args.quick else getattr(args, "variants", 20)
    size = 500 if args.quick else getattr(args, "corpus", 3000)
    corpus = ordinary_prompts(size)
    labels = list(MATCHERS)

    attacks = attack_table(variants)
    table(
        f"1. Attack prompts in which the attacked subject is found ({variants} per name and "
        f"class, {len(_attack_names())} names)",
        ["attack class", "prompts", *labels],
        [[r["attack"], r["prompts"], *(f"{100 * r[x]:.1f}%" for x in labels)] for r in attacks],
        caption=f"misspelling: names of at least {aliases.MIN_EDIT} letters only.",
    )
    for row in attacks:
        for prompt in row["missed"][:3]:
            note(f"  missed ({row['attack']}): {prompt!r}")

    realistic = registered()
    big = scale_subjects(1000)
    fr_small = false_refusals(corpus, realistic)
    fr_big = false_refusals(corpus, big)
    base, ours = labels
    new_small = _only(fr_small, ours, base)
    new_big = _only(fr_big, ours, base)
    table(
        f"2. False refusals on {len(corpus)} ordinary prompts",
        ["registered names", *labels, "refused by the new matcher only"],
        [
            [
                f"realistic set ({len(realistic)} subjects)",
                *(f"{100 * fr_small[x]['rate']:.2f}%" for x in labels),
                f"{100 * len(new_small) / len(corpus):.2f}%",
            ],
            [
                f"{len(big)} subjects",
                *(f"{100 * fr_big[x]['rate']:.2f}%" for x in labels),
                f"{100 * len(new_big) / len(corpus):.2f}%",
            ],
        ],
        caption="a refusal here is a prompt in which the matcher finds any registered name "
        "(both refuse the Spanish word 'al', a registered alias).",
    )
    for label in labels:
        for prompt, found in fr_big[label]["refused"][:5]:
            note(f"  {label}: {prompt!r} -> {found}")
    for prompt in new_big[:20]:
        note(f"  new matcher only: {prompt!r}")

    timing = speed(corpus, big)
    table(
        f"3. Speed with {len(big)} subjects over the corpus (median of 3 rounds)",
        ["matcher", "build ms", "us per prompt"],
        [[x, f"{timing[x]['build_ms']:.0f}", f"{timing[x]['us_per_prompt']:.1f}"] for x in labels],
    )
    return {
        "attacks": [{k: v for k, v in r.items() if k != "missed"} for r in attacks],
        "false_refusals": {
            "corpus": len(corpus),
            "realistic": {x: fr_small[x]["rate"] for x in labels},
            "realistic_subjects": len(realistic),
            "scale": {x: fr_big[x]["rate"] for x in labels},
            "scale_subjects": len(big),
            "refused_prompts": {x: [p for p, _ in fr_big[x]["refused"]] for x in labels},
            "refused_by_new_only": {"realistic": new_small, "scale": new_big},
        },
        "speed": timing,
        "thresholds": {
            "MIN_SPACED": aliases.MIN_SPACED,
            "MIN_COARSE": aliases.MIN_COARSE,
            "MIN_LOOSE": aliases.MIN_LOOSE,
            "MIN_EDIT": aliases.MIN_EDIT,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.aliases``: this benchmark alone (without importing the others)."""
    parser = argparse.ArgumentParser(prog="python -m bench.aliases", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for iterating")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    add_arguments(parser)
    args = parser.parse_args(argv)
    info = machine_info()
    print_header(info, args.quick)
    began = time.perf_counter()
    result = run(args)
    elapsed = time.perf_counter() - began
    path = write_json(
        args.out,
        "aliases",
        {
            "benchmark": "aliases",
            "quick": bool(args.quick),
            "machine": info,
            "total_seconds": round(elapsed, 2),
            **result,
        },
    )
    print(f"\n[bench] aliases: {elapsed:.1f} s in all; results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
