"""Offline verification of proof bundles: needs only the operator's public key(s).

An inclusion bundle (``consentry log proof INDEX --json``) carries the leaf,
its index, the audit path and the signed checkpoint it leads to. A consistency
bundle (``consentry log consistency``) carries two signed checkpoints and the
proof that the newer tree extends the older one. Verification returns the
verified checkpoint(s) and raises a :class:`~consentry.errors.LogError` subclass
otherwise; it never touches a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.errors import CheckpointError, ProofError
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.signing import checkpoint_key_name, key_id_of

__all__ = ["verify_consistency_bundle", "verify_inclusion_bundle"]


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError as exc:
        raise ProofError(f"{what} is not hex") from exc


def _checkpoint(note: Any, public_keys: Sequence[Ed25519PublicKey]) -> cp.Checkpoint:
    """Verify ``note`` under whichever trusted key signed it (keys rotate)."""
    _, signatures = cp.parse_checkpoint(str(note))
    names = {s.key_name for s in signatures}
    for public_key in public_keys:
        name = checkpoint_key_name(key_id_of(public_key))
        if name in names:
            return cp.verify_checkpoint(str(note), name, public_key)
    raise CheckpointError("the checkpoint is not signed by any of the given public keys")


def verify_inclusion_bundle(
    bundle: dict[str, Any], public_keys: Sequence[Ed25519PublicKey]
) -> cp.Checkpoint:
    """Check the checkpoint's signature, the leaf's hash and its audit path."""
    try:
        index = int(bundle["index"])
        tree_size = int(bundle["tree_size"])
        leaf = str(bundle["leaf"]).encode()
        hashes = [_hex(h, "proof hash") for h in bundle["hashes"]]
        note = bundle["checkpoint"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"malformed inclusion proof: {exc}") from exc
    checkpoint = _checkpoint(note, public_keys)
    if checkpoint.tree_size != tree_size:
        raise ProofError("the proof's tree size differs from its checkpoint's")
    leaf_hash = merkle.leaf_hash(leaf)
    if "leaf_hash" in bundle and _hex(bundle["leaf_hash"], "leaf hash") != leaf_hash:
        raise ProofError("the leaf does not hash to the proof's leaf hash")
    merkle.verify_inclusion(leaf_hash, index, tree_size, hashes, checkpoint.root_hash)
    return checkpoint


def verify_consistency_bundle(
    bundle: dict[str, Any], public_keys: Sequence[Ed25519PublicKey]
) -> tuple[cp.Checkpoint, cp.Checkpoint]:
    """Check both checkpoints' signatures and that the new tree extends the old."""
    try:
        old_note, new_note = bundle["old_checkpoint"], bundle["new_checkpoint"]
        hashes = [_hex(h, "proof hash") for h in bundle["hashes"]]
    except (KeyError, TypeError) as exc:
        raise ProofError(f"malformed consistency proof: {exc}") from exc
    old = _checkpoint(old_note, public_keys)
    new = _checkpoint(new_note, public_keys)
    cp.check_not_rollback(old, new)
    if old.tree_size == new.tree_size:
        return old, new
    merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, hashes)
    return old, new
