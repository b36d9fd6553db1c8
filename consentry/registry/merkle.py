"""RFC 9162 Merkle tree hashing: tree roots, inclusion and consistency proofs.

This module is pure: no I/O, no state beyond what a :class:`MerkleTree` caches.

Invariants
----------
* Every hash is SHA-256 and exactly :data:`HASH_SIZE` (32) bytes long.
* Leaf hashes and interior hashes are domain-separated (RFC 9162 section 2.1.1):
  ``leaf_hash(d) = SHA-256(0x00 || d)`` and
  ``node_hash(l, r) = SHA-256(0x01 || l || r)``, so no leaf can pose as a node.
* ``MTH`` of the empty list is ``SHA-256("")``, of one leaf hash is that hash, and
  of ``n > 1`` hashes is ``node_hash(MTH(D[0:k]), MTH(D[k:n]))`` with ``k`` the
  largest power of two smaller than ``n``. The functions here take *leaf hashes*
  (the output of :func:`leaf_hash`), not raw entries.
* Computing level by level, pairing neighbours and carrying an unpaired last node up
  unchanged, yields the same root as the RFC's recursive split; the node at level
  ``j``, position ``i`` is ``MTH`` of leaves ``[i * 2**j, min((i + 1) * 2**j, n))``.
* Proofs are lists of hashes ordered from the leaf (or the old tree) upwards, exactly
  as RFC 9162 ``PATH`` (2.1.3.1) and ``PROOF`` (2.1.4.1) produce them.
* Verification follows RFC 9162 2.1.3.2 and 2.1.4.2. It returns ``None`` on success
  and raises :class:`~consentry.errors.ProofError` on any failure: malformed hash,
  index or size out of range, proof of the wrong length, or hash mismatch.
* Consistency proofs exist for ``0 < old_size <= new_size``. ``old_size == 0`` is
  rejected (every tree trivially extends the empty tree; a caller that trusts no
  earlier checkpoint has nothing to check). ``old_size == new_size`` needs an empty
  proof and equal roots.
* A proof does not commit to the tree size on its own: an inclusion proof for leaf
  0 of a 4-leaf tree also verifies against the same root claimed as a 3-leaf tree,
  because both trees give leaf 0 the same path shape. The size is bound by the
  signed checkpoint that carries the root, never by the proof.

Generating proofs from a plain sequence of leaf hashes costs O(n) hashing per call
(the sibling subtrees must be hashed). :class:`MerkleTree` hashes every level once
and then answers roots and proofs in O(log n).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from consentry.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "consistency_proof",
    "consistency_proof_from",
    "inclusion_proof",
    "inclusion_proof_from",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the empty tree, ``SHA-256("")``."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

# Hash of the leaf range [lo, hi) of the tree a proof is drawn from.
_RangeHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """Return ``SHA-256(0x00 || data)``, the hash of one log entry."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``, the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """Largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def _check_leaves(leaf_hashes: Sequence[bytes]) -> None:
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes, got {len(h)}")


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair neighbours; an unpaired last node is carried up unchanged."""
    sha = _sha256
    it = iter(level)
    parents = [sha(_NODE_PREFIX + a + b).digest() for a, b in zip(it, it, strict=False)]
    if len(level) & 1:
        parents.append(level[-1])
    return parents


def _reduce(level: list[bytes]) -> bytes:
    """``MTH`` of a non-empty list of leaf hashes, level by level."""
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 9162 Merkle tree hash (``MTH``) of ``leaf_hashes``.

    Raises ``ValueError`` if a leaf hash is not 32 bytes long.
    """
    _check_leaves(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _reduce(list(leaf_hashes))


def _sequence_range_hash(leaf_hashes: Sequence[bytes]) -> _RangeHash:
    def range_hash(lo: int, hi: int) -> bytes:
        return _reduce(list(leaf_hashes[lo:hi]))

    return range_hash


def _inclusion_path(index: int, size: int, range_hash: _RangeHash) -> list[bytes]:
    # RFC 9162 PATH(m, D[n]), walked top-down over [lo, hi), then put leaf-first.
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append(range_hash(mid, hi))
            hi = mid
        else:
            path.append(range_hash(lo, mid))
            lo = mid
    path.reverse()
    return path


def _consistency_path(old_size: int, size: int, range_hash: _RangeHash) -> list[bytes]:
    # RFC 9162 SUBPROOF(m, D[n], b), walked top-down over [lo, hi), then reversed.
    path: list[bytes] = []
    lo, hi = 0, size
    whole_old_tree = True  # the RFC's flag b
    while old_size != hi:
        mid = lo + _split(hi - lo)
        if old_size <= mid:
            path.append(range_hash(mid, hi))
            hi = mid
        else:
            path.append(range_hash(lo, mid))
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        path.append(range_hash(lo, hi))
    path.reverse()
    return path


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")


def _check_old_size(old_size: int, size: int) -> None:
    if not 0 < old_size <= size:
        raise ValueError(f"old size {old_size} is not in 1..{size}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the RFC 9162 inclusion proof (``PATH``) for leaf ``index``.

    Raises ``ValueError`` if ``index`` is not in ``0..len(leaf_hashes) - 1`` or a
    leaf hash is not 32 bytes long. Costs O(n) hashing; see :class:`MerkleTree`.
    """
    _check_index(index, len(leaf_hashes))
    _check_leaves(leaf_hashes)
    return _inclusion_path(index, len(leaf_hashes), _sequence_range_hash(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return the RFC 9162 consistency proof (``PROOF``) from ``old_size`` to now.

    The proof is empty when ``old_size == len(leaf_hashes)``. Raises ``ValueError``
    if ``old_size`` is not in ``1..len(leaf_hashes)`` or a leaf hash is not 32 bytes
    long. Costs O(n) hashing; see :class:`MerkleTree`.
    """
    _check_old_size(old_size, len(leaf_hashes))
    _check_leaves(leaf_hashes)
    return _consistency_path(old_size, len(leaf_hashes), _sequence_range_hash(leaf_hashes))


class MerkleTree:
    """A fixed list of leaf hashes with every tree level hashed once.

    Building costs O(n) hashing and about twice the leaves' memory; afterwards
    :attr:`root`, :meth:`inclusion_proof` and :meth:`consistency_proof` cost
    O(log n). Results equal the module-level functions' for the same leaves.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        _check_leaves(leaf_hashes)
        level = list(leaf_hashes)
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = _next_level(level)
            self._levels.append(level)

    def __len__(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """``MTH`` of all the leaves."""
        top = self._levels[-1]
        return top[0] if top else EMPTY_ROOT

    def _range_hash(self, lo: int, hi: int) -> bytes:
        # Proofs only ask for aligned power-of-two ranges or ranges that end at the
        # last leaf; both are the node at level ceil(log2(hi - lo)), slot lo >> level.
        level = (hi - lo - 1).bit_length()
        return self._levels[level][lo >> level]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Same as :func:`inclusion_proof` over this tree's leaves."""
        _check_index(index, len(self))
        return _inclusion_path(index, len(self), self._range_hash)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Same as :func:`consistency_proof` over this tree's leaves."""
        _check_old_size(old_size, len(self))
        return _consistency_path(old_size, len(self), self._range_hash)


# --- verification ---------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes | bytearray | memoryview) else "?"
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {size}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(h, f"proof hash {i}")


def _inclusion_proof_length(index: int, size: int) -> int:
    length = 0
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        lo, hi = (lo, mid) if index < mid else (mid, hi)
        length += 1
    return length


def _consistency_proof_length(old_size: int, size: int) -> int:
    length = 0
    lo, hi = 0, size
    whole_old_tree = True
    while old_size != hi:
        mid = lo + _split(hi - lo)
        if old_size <= mid:
            hi = mid
        else:
            lo = mid
            whole_old_tree = False
        length += 1
    return length if whole_old_tree else length + 1


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` sits at ``index`` in the tree of ``tree_size`` leaves
    whose root is ``root`` (RFC 9162 section 2.1.3.2).

    Returns ``None`` on success; raises :class:`ProofError` otherwise.
    """
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root hash")
    _check_proof_hashes(proof)
    if tree_size <= 0:
        raise ProofError(f"tree size must be positive, got {tree_size}")
    if not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index} is outside a tree of size {tree_size}")
    expected = _inclusion_proof_length(index, tree_size)
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} of {tree_size} has {len(proof)} hashes, "
            f"expected {expected}"
        )

    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` leaves with root ``old_root`` is a prefix of
    the tree of ``new_size`` leaves with root ``new_root`` (RFC 9162 section 2.1.4.2).

    Returns ``None`` on success; raises :class:`ProofError` otherwise, including for
    ``old_size <= 0`` and ``old_size > new_size``.
    """
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    _check_proof_hashes(proof)
    if old_size <= 0:
        raise ProofError(f"old tree size must be positive, got {old_size}")
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} exceeds new tree size {new_size}")
    if old_size == new_size:
        _check_equal_trees(old_size, old_root, new_root, proof)
        return
    expected = _consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof from {old_size} to {new_size} has {len(proof)} hashes, "
            f"expected {expected}"
        )
    fr, sr = _consistency_roots(old_size, new_size, old_root, proof)
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


def _check_equal_trees(size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Between equal sizes the proof is empty and the roots are the same."""
    if proof:
        raise ProofError("consistency proof between equal sizes must be empty")
    if old_root != new_root:
        raise ProofError(f"trees of equal size {size} have different roots")


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The old and new roots ``proof`` leads to (RFC 9162 section 2.1.4.2, steps 1-6),
    for ``0 < old_size < new_size``; ProofError if the path is too long or too short."""
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    return fr, sr


# --- proofs over stored hashes (registry.tiles) ------------------------------------


def inclusion_proof_from(range_hash: _RangeHash, index: int, size: int) -> list[bytes]:
    """RFC 9162 ``PATH`` for leaf ``index`` of a tree of ``size`` leaves, asking
    ``range_hash(lo, hi)`` for each sibling's ``MTH`` of leaves ``[lo, hi)``.

    Every range asked is either an aligned power-of-two range or one that ends at
    ``size`` and starts at a multiple of a power of two at least its length, so a
    store of complete-subtree hashes can answer it from O(log n) of them.
    """
    _check_index(index, size)
    return _inclusion_path(index, size, range_hash)


def consistency_proof_from(range_hash: _RangeHash, old_size: int, size: int) -> list[bytes]:
    """RFC 9162 ``PROOF`` from ``old_size`` to ``size`` through ``range_hash`` (see
    :func:`inclusion_proof_from` for the ranges it asks)."""
    _check_old_size(old_size, size)
    return _consistency_path(old_size, size, range_hash)
