"""``consentry log``: checkpoints, proofs, offline proof verification, full verify.

Opening the registry checks the log against this party's witness folder (see
``consentry.registry.witness``): a rolled-back database is refused with exit 2.
``--witness-key`` makes ``verify`` and ``verify-proof`` also require a witness's
cosignature (``consentry witness cosign``).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json, fail, open_registry
from consentry.cli.witness_cmds import WitnessKeyOpt, parse_witness_keys, require_cosigned
from consentry.config import Home, resolve_home
from consentry.errors import InputError

__all__ = ["app"]

app = typer.Typer(
    help="The transparency log: checkpoints, proofs, verification.", no_args_is_help=True
)

IndexArg = Annotated[int, typer.Argument(help="The entry's log index (0 is the first entry).")]


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


@app.command("checkpoint")
def checkpoint(home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the log now and print it (signed-note text)."""
    from consentry.registry import checkpoint as cp

    with open_registry(home, db) as registry:
        note = registry.checkpoint()
    if as_json:
        parsed, _ = cp.parse_checkpoint(note)
        emit_json(
            {
                "origin": parsed.origin,
                "tree_size": parsed.tree_size,
                "root_hash": parsed.root_hash.hex(),
                "note": note,
            }
        )
    else:
        typer.echo(note, nl=False)


@app.command("show")
def show(
    index: IndexArg, home: HomeOpt = None, db: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Print one log entry as JSON: the canonical leaf as logged (its signed envelope
    with the base64 payload), and ``statement``, that payload decoded (what was signed,
    readable; shown, not verified: 'consentry log verify' checks the signatures).
    The output is always JSON; ``--json`` is accepted like everywhere (errors as JSON)."""
    with open_registry(home, db) as registry:
        entry = registry.entry(index)
    leaf = json.loads(entry.leaf_json)
    emit_json(
        {
            "index": entry.idx,
            "kind": entry.kind,
            "record_id": entry.record_id,
            "leaf_hash": entry.leaf_hash,
            "leaf": leaf,
            "statement": _statement(leaf),
        }
    )


def _statement(leaf: Any) -> Any:
    """The decoded payload of ``leaf``'s envelope; None when it has none."""
    envelope = leaf.get("envelope") if isinstance(leaf, dict) else None
    payload = envelope.get("payload") if isinstance(envelope, dict) else None
    if not isinstance(payload, str):
        return None
    try:
        return json.loads(base64.b64decode(payload, validate=True))
    except (ValueError, binascii.Error):
        return None


@app.command("proof")
def proof(
    index: IndexArg,
    checkpoint_file: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Prove against this checkpoint (default: latest)."),
    ] = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inclusion proof of entry INDEX against the latest (or a given) checkpoint."""
    note = _read_text(checkpoint_file, "checkpoint") if checkpoint_file else None
    with open_registry(home, db) as registry:
        bundle = registry.inclusion_proof(index, note).to_json()
    bundle["type"] = "inclusion"
    if as_json:
        emit_json(bundle)
        return
    typer.echo(f"entry {bundle['index']} of {bundle['tree_size']}")
    typer.echo(f"leaf hash: {bundle['leaf_hash']}")
    for value in bundle["hashes"]:
        typer.echo(f"  {value}")


@app.command("consistency")
def consistency(
    old_checkpoint: Annotated[Path, typer.Argument(help="An earlier checkpoint (note file).")],
    home: HomeOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Consistency proof from an earlier checkpoint to the latest one."""
    from consentry.registry import checkpoint as cp

    old_note = _read_text(old_checkpoint, "checkpoint")
    old, _ = cp.parse_checkpoint(old_note)
    with open_registry(home, db) as registry:
        new_note = registry.latest_checkpoint()
        new, _ = cp.parse_checkpoint(new_note)
        hashes = registry.consistency_proof(old.tree_size, new.tree_size) if old.tree_size else []
    bundle: dict[str, Any] = {
        "type": "consistency",
        "old_checkpoint": old_note,
        "new_checkpoint": new_note,
        "hashes": [h.hex() for h in hashes],
    }
    if as_json:
        emit_json(bundle)
    else:
        typer.echo(f"{old.tree_size} -> {new.tree_size}")
        for value in bundle["hashes"]:
            typer.echo(f"  {value}")


@app.command("verify-proof")
def verify_proof(
    proof_file: Annotated[
        Path, typer.Argument(help="A proof from 'log proof --json' or 'log consistency --json'.")
    ],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Trusted operator public key (PEM); repeatable. Default: the home's "
            "keys/operator.pub.",
        ),
    ] = None,
    witness_key: WitnessKeyOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a proof offline, with only the operator's public key. Exit 1 if it fails.

    Without --public-key the key is the home's ``keys/operator.pub`` (--home, else
    CONSENTRY_HOME, else the per-user folder); the registry's database is never read.
    With --witness-key the proof's checkpoint must also carry that witness's cosignature.
    """
    from consentry.registry.offline import verify_consistency_bundle, verify_inclusion_bundle
    from consentry.registry.signing import load_public_key

    if not public_key:
        public_key = [Home(resolve_home(home)).operator_public]
    witnesses = parse_witness_keys(witness_key)
    try:
        bundle = json.loads(_read_text(proof_file, "proof"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{proof_file} is not JSON: {exc}") from exc
    if not isinstance(bundle, dict):
        raise InputError(f"{proof_file} is not a proof object")
    keys = [load_public_key(p) for p in public_key]
    note = bundle.get("new_checkpoint" if bundle.get("type") == "consistency" else "checkpoint")
    if witnesses:
        if not isinstance(note, str):
            raise InputError(f"{proof_file} carries no checkpoint note")
        require_cosigned(note, witnesses)
    if bundle.get("type") == "consistency":
        old, new = verify_consistency_bundle(bundle, keys)
        result = {
            "ok": True,
            "type": "consistency",
            "old_size": old.tree_size,
            "new_size": new.tree_size,
            "root_hash": new.root_hash.hex(),
        }
        text = f"OK: the tree of size {new.tree_size} extends the tree of size {old.tree_size}"
    else:
        checkpoint = verify_inclusion_bundle(bundle, keys)
        result = {
            "ok": True,
            "type": "inclusion",
            "index": bundle["index"],
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
        }
        text = f"OK: entry {bundle['index']} is in the signed tree of size {checkpoint.tree_size}"
    if as_json:
        emit_json(result)
    else:
        typer.echo(text)


@app.command("add-cosignature")
def add_cosignature(
    note_file: Annotated[Path, typer.Argument(help="A checkpoint note a witness co-signed.")],
    home: HomeOpt = None,
    db: DbOpt = None,
) -> None:
    """Store a witness's cosignature lines with the stored checkpoint they sign."""
    note = _read_text(note_file, "checkpoint")
    with open_registry(home, db) as registry:
        stored = registry.log.add_cosignatures(note)
    typer.echo(stored, nl=False)


@app.command("verify")
def verify(
    home: HomeOpt = None,
    db: DbOpt = None,
    witness_key: WitnessKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every leaf from the rows, check every signature and checkpoint.

    Exit 0 when everything verifies, 1 naming every record that does not, 2 when
    the log does not extend what this party's witness folder saw (rollback). With
    --witness-key a stored checkpoint must carry that witness's cosignature.
    Streams the log in bounded memory and reports its rate (entries/s).
    """
    witnesses = parse_witness_keys(witness_key)
    witnessed: dict[str, int] = {}
    with open_registry(home, db) as registry:
        report = registry.verify_log()
        for name, public in witnesses:
            witnessed[name] = registry.log.cosigned_size(name, public)
    for name, size in witnessed.items():
        if size == 0:
            report.problems.append(
                f"witness {name}: no stored checkpoint carries its valid cosignature "
                "(run 'consentry witness cosign')"
            )
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "size": report.size,
                "root_hash": report.root.hex(),
                "checkpoints": report.checkpoints,
                "seconds": round(report.seconds, 3),
                "entries_per_s": round(report.entries_per_s, 1),
                "witnessed": witnessed,
                "problems": report.problems,
            }
        )
    elif report.ok:
        typer.echo(
            f"OK: {report.size} entries, {report.checkpoints} checkpoints, root {report.root.hex()}"
        )
        typer.echo(f"verified in {report.seconds:.2f} s ({report.entries_per_s:,.0f} entries/s)")
        for name, size in witnessed.items():
            typer.echo(f"witness {name}: cosigned the first {size} of {report.size} entries")
    else:
        for problem in report.problems:
            typer.echo(f"FAIL: {problem}", err=True)
    if not report.ok:
        if not as_json:
            fail(f"log verification failed with {len(report.problems)} problem(s)")
        raise typer.Exit(1)
