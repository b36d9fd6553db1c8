"""``consentry witness``: an independent witness that co-signs the log's checkpoints.

A witness keeps its key and what it co-signed in its own folder (``--witness-dir``,
``CONSENTRY_WITNESS_DIR``, else the per-user state folder), never in the registry
home. ``cosign`` checks with a consistency proof that the log's newest checkpoint
extends the one it co-signed last and only then adds its ``cosignature/v1`` line;
verifiers require it with ``--witness-key`` (``log verify``, ``log verify-proof``,
``verify``). See SECURITY.md, "Rollback and witnesses".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from consentry.cli.common import DbOpt, HomeOpt, JsonOpt, emit_json
from consentry.config import WITNESS_DIR_ENV
from consentry.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from consentry.registry.witness import WitnessKey, WitnessStore

# The checkpoint, signing and witness modules (cryptography) are imported inside the
# commands, so the CLI starts without them.

__all__ = ["WitnessDirOpt", "WitnessKeyOpt", "app", "parse_witness_keys", "require_cosigned"]

app = typer.Typer(
    help="An independent witness: co-sign checkpoints that extend what it saw.",
    no_args_is_help=True,
)

WitnessDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--witness-dir",
        envvar=WITNESS_DIR_ENV,
        help="Witness folder, outside the registry home (default: CONSENTRY_WITNESS_DIR, "
        "else a per-user state folder).",
        show_default=False,
    ),
]
WitnessKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness-key",
        help="Require a cosignature by this witness: its key line (name+hash+key) or a "
        "file holding it (witness.vkey); repeatable.",
        show_default=False,
    ),
]


def parse_witness_keys(values: Sequence[str] | None) -> list[tuple[str, Ed25519PublicKey]]:
    """``--witness-key`` values (key lines or files holding one) as (name, key)."""
    from consentry.registry import checkpoint as cp

    keys: list[tuple[str, Ed25519PublicKey]] = []
    for value in values or ():
        text = value
        if "+" not in value or Path(value).is_file():
            try:
                text = Path(value).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the witness key {value}: {exc}") from exc
        try:
            keys.append(cp.parse_vkey(text))
        except CheckpointError as exc:
            raise InputError(f"bad witness key {value!r}: {exc}") from exc
    return keys


def require_cosigned(note: str, keys: Sequence[tuple[str, Ed25519PublicKey]]) -> None:
    """Raise ``CheckpointError`` unless every witness key cosigned ``note``."""
    from consentry.registry import checkpoint as cp

    for name, public in keys:
        cp.verify_cosignature(note, name, public)


def _stores(witness_dir: Path | None) -> tuple[WitnessStore, WitnessStore]:
    from consentry.registry.witness import WitnessStore

    return WitnessStore.resolve(witness_dir), WitnessStore.resolve(witness_dir, "cosigned")


def _summary(note: str) -> dict[str, Any]:
    from consentry.registry import checkpoint as cp

    checkpoint, signatures = cp.parse_checkpoint(note)
    return {
        "origin": checkpoint.origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "signatures": [s.key_name for s in signatures],
        "note": note,
    }


@app.command("init")
def init(
    name: Annotated[
        str | None, typer.Option("--name", help="Key name (default consentry-witness/<id>).")
    ] = None,
    witness_dir: WitnessDirOpt = None,
) -> None:
    """Create this witness's co-signing key (0600) in the witness folder; print its key line."""
    from consentry.registry.witness import WitnessKey

    store, _ = _stores(witness_dir)
    witness = WitnessKey.create(store, name)
    typer.echo(f"witness key:  {store.key_file}")
    typer.echo(f"verifier key: {store.vkey_file}")
    typer.echo(witness.vkey)


@app.command("show")
def show(witness_dir: WitnessDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the witness key line and the newest checkpoint seen and co-signed of each log."""
    seen, cosigned = _stores(witness_dir)
    vkey = seen.vkey_file.read_text().strip() if seen.vkey_file.exists() else None
    logs: dict[str, dict[str, Any]] = {}
    for role, store in (("seen", seen), ("cosigned", cosigned)):
        for path in sorted(store.logs_dir.glob("*.checkpoint")) if store.logs_dir.is_dir() else []:
            info = _summary(path.read_text(encoding="utf-8"))
            logs.setdefault(info["origin"], {})[role] = info
    if as_json:
        emit_json({"folder": str(seen.folder), "witness_key": vkey, "logs": logs})
        return
    typer.echo(f"folder:      {seen.folder}")
    typer.echo(f"witness key: {vkey or '(none: run consentry witness init)'}")
    for origin, roles in sorted(logs.items()):
        sizes = ", ".join(f"{role} {info['tree_size']}" for role, info in sorted(roles.items()))
        typer.echo(f"{origin}: {sizes}")


@app.command("cosign")
def cosign_command(
    bundle_file: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Offline: a 'log consistency --json' bundle from the checkpoint this "
            "witness co-signed last (or any, the first time) to the newest.",
        ),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="Offline: the operator's public key (PEM); repeatable."),
    ] = None,
    home: HomeOpt = None,
    db: DbOpt = None,
    witness_dir: WitnessDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Co-sign the log's newest checkpoint if it extends what this witness co-signed last.

    With the registry (--home): the proof comes from its database and the cosigned
    note is stored with the checkpoint. Offline (--bundle, --public-key): the
    cosigned note is printed, to be stored with 'consentry log add-cosignature'.
    Exit 2 (and nothing signed) for a checkpoint that does not extend it.
    """
    from consentry.registry import checkpoint as cp
    from consentry.registry.signing import checkpoint_key_name
    from consentry.registry.store import Registry
    from consentry.registry.witness import WitnessKey, cosign

    seen, cosigned_store = _stores(witness_dir)
    witness = WitnessKey.load(seen)
    if bundle_file is not None:
        note = _cosign_bundle(bundle_file, public_key or [], witness, cosigned_store)
    else:
        with Registry.open(home, db, witness_dir=witness_dir) as registry:
            latest = registry.latest_checkpoint()
            keys = {checkpoint_key_name(k): v for k, v in registry.trusted_keys().items()}
            size = cp.parse_checkpoint(latest)[0].tree_size
            cosigned = cosign(
                cosigned_store,
                witness,
                latest,
                lambda old: registry.consistency_proof(old, size),
                keys,
                registry.now(),
                origin=registry.origin,
            )
            note = registry.log.add_cosignatures(cosigned)
    if as_json:
        emit_json(_summary(note))
    else:
        typer.echo(note, nl=False)


def _cosign_bundle(
    bundle_file: Path, public_keys: list[Path], witness: WitnessKey, store: WitnessStore
) -> str:
    from datetime import UTC, datetime

    from consentry.registry import checkpoint as cp
    from consentry.registry.signing import checkpoint_key_name, key_id_of, load_public_key
    from consentry.registry.witness import cosign

    if not public_keys:
        raise InputError("offline co-signing needs the operator's --public-key")
    try:
        bundle = json.loads(bundle_file.read_text(encoding="utf-8"))
        old_note, new_note = bundle["old_checkpoint"], bundle["new_checkpoint"]
        hashes = [bytes.fromhex(h) for h in bundle["hashes"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{bundle_file} is not a 'log consistency --json' bundle: {exc}") from exc
    if not isinstance(old_note, str) or not isinstance(new_note, str):
        raise InputError(f"{bundle_file} is not a 'log consistency --json' bundle")
    keys = {}
    for path in public_keys:
        public = load_public_key(path)
        keys[checkpoint_key_name(key_id_of(public))] = public
    old, _ = cp.parse_checkpoint(old_note)

    def proof(last: int) -> list[bytes]:
        if last != old.tree_size:
            raise InputError(
                f"the bundle proves from size {old.tree_size}, but this witness co-signed "
                f"size {last} last",
                hint="run 'consentry log consistency' from that checkpoint",
            )
        return hashes

    # the proof is checked against this witness's own stored root, never the bundle's
    return cosign(store, witness, new_note, proof, keys, datetime.now(UTC).replace(microsecond=0))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="witness")
