"""Tests for consentry.registry.merkle against a direct RFC 9162 reference."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache, partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.errors import ProofError
from consentry.registry.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# --- reference: RFC 9162 section 2.1, written as literally as possible -----------


def ref_hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_hash_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH over leaf *hashes* (the RFC's MTH with leaf hashing already applied)."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return d[0]
    k = ref_split(n)
    return ref_hash_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def path_shape(m: int, n: int) -> tuple[str, ...] | None:
    """Which side each sibling of leaf m sits on, leaf first; None if m is invalid."""
    if not 0 <= m < n:
        return None
    sides: list[str] = []
    while n > 1:
        k = ref_split(n)
        if m < k:
            sides.append("R")
            n = k
        else:
            sides.append("L")
            m, n = m - k, n - k
    return tuple(reversed(sides))


def subproof_shape(m: int, n: int) -> tuple[str, ...] | None:
    """The RFC SUBPROOF recursion's left/right choices, deepest first."""
    if not 0 < m < n:
        return None
    choices: list[str] = []
    while m != n:
        k = ref_split(n)
        if m <= k:
            choices.append("left")
            n = k
        else:
            choices.append("right")
            m, n = m - k, n - k
    return tuple(reversed(choices))


# --- fixtures ----------------------------------------------------------------------


@cache
def leaves(n: int) -> tuple[bytes, ...]:
    """n distinct leaf hashes."""
    return tuple(ref_hash_leaf(b"entry-%d" % i) for i in range(n))


def flip_bit(value: bytes, bit: int) -> bytes:
    buf = bytearray(value)
    buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf)


def raises_proof_error(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return True
    return False


# --- hashing known answers ------------------------------------------------------------

# The RFC 6962 / certificate-transparency reference test leaves and roots.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == bytes.fromhex(expected)
    assert bytes.fromhex(expected) == EMPTY_ROOT
    assert MerkleTree([]).root == EMPTY_ROOT


def test_leaf_hash_of_empty_entry() -> None:
    expected = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"") == bytes.fromhex(expected)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert leaf_hash(a + b) != node_hash(a, b)
    assert node_hash(a, b) != node_hash(b, a)


def test_one_leaf_root_is_the_leaf_hash() -> None:
    h = leaf_hash(b"only")
    assert root_hash([h]) == h


@pytest.mark.parametrize("n", range(1, len(CT_LEAVES) + 1))
def test_root_matches_ct_test_vectors(n: int) -> None:
    assert root_hash([leaf_hash(d) for d in CT_LEAVES[:n]]).hex() == CT_ROOTS[n - 1]


def test_root_rejects_leaf_hash_of_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        root_hash([leaf_hash(b"x"), b"short"])


# --- agreement with the reference for every small tree ----------------------------------


@pytest.mark.parametrize("n", range(1, 71))
def test_root_matches_reference(n: int) -> None:
    d = leaves(n)
    assert root_hash(d) == ref_mth(d)
    assert MerkleTree(d).root == ref_mth(d)


@pytest.mark.parametrize("n", range(1, 71))
def test_every_inclusion_proof_matches_reference_and_verifies(n: int) -> None:
    d = leaves(n)
    tree = MerkleTree(d)
    root = ref_mth(d)
    for index in range(n):
        proof = inclusion_proof(d, index)
        assert proof == ref_path(index, d), index
        assert tree.inclusion_proof(index) == proof, index
        verify_inclusion(d[index], index, n, proof, root)


@pytest.mark.parametrize("n", range(1, 71))
def test_every_consistency_proof_matches_reference_and_verifies(n: int) -> None:
    d = leaves(n)
    tree = MerkleTree(d)
    new_root = ref_mth(d)
    for old_size in range(1, n + 1):
        proof = consistency_proof(d, old_size)
        assert proof == ref_proof(old_size, d), old_size
        assert tree.consistency_proof(old_size) == proof, old_size
        verify_consistency(old_size, n, ref_mth(d[:old_size]), new_root, proof)


def test_consistency_proof_to_same_size_is_empty() -> None:
    d = leaves(7)
    assert consistency_proof(d, 7) == []
    verify_consistency(7, 7, root_hash(d), root_hash(d), [])


# --- proof generation argument errors ----------------------------------------------------


@pytest.mark.parametrize("index", [-1, 5, 6])
def test_inclusion_proof_rejects_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(leaves(5), index)
    with pytest.raises(ValueError, match="outside"):
        MerkleTree(leaves(5)).inclusion_proof(index)


def test_inclusion_proof_rejects_empty_tree() -> None:
    with pytest.raises(ValueError):
        inclusion_proof([], 0)


@pytest.mark.parametrize("old_size", [-1, 0, 6])
def test_consistency_proof_rejects_old_size_out_of_range(old_size: int) -> None:
    with pytest.raises(ValueError, match="old size"):
        consistency_proof(leaves(5), old_size)
    with pytest.raises(ValueError, match="old size"):
        MerkleTree(leaves(5)).consistency_proof(old_size)


# --- verification edge cases ----------------------------------------------------------------


def test_inclusion_rejects_proof_one_hash_too_long() -> None:
    d = leaves(6)
    proof = inclusion_proof(d, 2)
    with pytest.raises(ProofError, match="expected 3"):
        verify_inclusion(d[2], 2, 6, [*proof, d[0]], root_hash(d))


def test_inclusion_rejects_proof_one_hash_too_short() -> None:
    d = leaves(6)
    proof = inclusion_proof(d, 2)
    with pytest.raises(ProofError, match="expected 3"):
        verify_inclusion(d[2], 2, 6, proof[:-1], root_hash(d))


@pytest.mark.parametrize(("index", "size"), [(-1, 6), (6, 6), (7, 6), (0, 0), (0, -1)])
def test_inclusion_rejects_index_or_size_out_of_range(index: int, size: int) -> None:
    d = leaves(6)
    with pytest.raises(ProofError):
        verify_inclusion(d[0], index, size, inclusion_proof(d, 0), root_hash(d))


def test_inclusion_single_leaf_tree_needs_empty_proof() -> None:
    h = leaf_hash(b"solo")
    verify_inclusion(h, 0, 1, [], h)
    with pytest.raises(ProofError):
        verify_inclusion(h, 0, 1, [h], h)
    with pytest.raises(ProofError):
        verify_inclusion(h, 0, 1, [], leaf_hash(b"other"))


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_inclusion_rejects_hashes_of_wrong_length(bad: bytes) -> None:
    d = leaves(4)
    proof = inclusion_proof(d, 1)
    root = root_hash(d)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(bad, 1, 4, proof, root)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(d[1], 1, 4, proof, bad)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(d[1], 1, 4, [bad, *proof[1:]], root)


def test_inclusion_proof_does_not_bind_tree_size() -> None:
    # RFC 9162 property, documented in the module: leaf 0 has the same path shape
    # in trees of 3 and 4 leaves, so the size-4 proof also checks as size 3. The
    # checkpoint's signature is what ties a root to its size.
    d = leaves(4)
    proof = inclusion_proof(d, 0)
    verify_inclusion(d[0], 0, 3, proof, root_hash(d))
    with pytest.raises(ProofError):
        verify_inclusion(d[0], 0, 5, proof, root_hash(d))


def test_consistency_rejects_old_size_zero() -> None:
    d = leaves(3)
    with pytest.raises(ProofError, match="positive"):
        verify_consistency(0, 3, EMPTY_ROOT, root_hash(d), [])


def test_consistency_rejects_old_size_above_new_size() -> None:
    d = leaves(5)
    with pytest.raises(ProofError, match="exceeds"):
        verify_consistency(5, 3, root_hash(d), root_hash(d[:3]), consistency_proof(d, 3))


def test_consistency_equal_sizes_need_empty_proof() -> None:
    d = leaves(5)
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(5, 5, root_hash(d), root_hash(d), [d[0]])


def test_consistency_equal_sizes_need_equal_roots() -> None:
    d = leaves(5)
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(5, 5, root_hash(d), root_hash(d[:4]), [])


def test_consistency_rejects_empty_proof_between_different_sizes() -> None:
    d = leaves(8)
    with pytest.raises(ProofError, match="expected"):
        verify_consistency(4, 8, root_hash(d[:4]), root_hash(d), [])


def test_consistency_rejects_proof_of_wrong_length() -> None:
    d = leaves(11)
    proof = consistency_proof(d, 6)
    old, new = root_hash(d[:6]), root_hash(d)
    with pytest.raises(ProofError, match="expected"):
        verify_consistency(6, 11, old, new, [*proof, d[0]])
    with pytest.raises(ProofError, match="expected"):
        verify_consistency(6, 11, old, new, proof[1:])


def test_consistency_rejects_a_fork() -> None:
    d = leaves(9)
    forked = [*d[:4], leaf_hash(b"rewritten"), *d[5:]]
    proof = consistency_proof(forked, 6)
    with pytest.raises(ProofError, match="root"):
        verify_consistency(6, 9, root_hash(d[:6]), root_hash(forked), proof)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_consistency_rejects_hashes_of_wrong_length(bad: bytes) -> None:
    d = leaves(7)
    proof = consistency_proof(d, 3)
    old, new = root_hash(d[:3]), root_hash(d)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_consistency(3, 7, bad, new, proof)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_consistency(3, 7, old, bad, proof)
    with pytest.raises(ProofError, match="32 bytes"):
        verify_consistency(3, 7, old, new, [bad, *proof[1:]])


def test_consistency_proof_does_not_bind_new_size() -> None:
    # As for inclusion: 2 -> 4 and 2 -> 3 share a proof shape.
    d = leaves(4)
    proof = consistency_proof(d, 2)
    verify_consistency(2, 3, root_hash(d[:2]), root_hash(d), proof)


def test_size_changes_fail_exactly_when_the_inclusion_shape_changes() -> None:
    for n in range(1, 34):
        d = leaves(n)
        root = root_hash(d)
        for index in range(n):
            proof = inclusion_proof(d, index)
            for other in range(-1, 41):
                if other == n:
                    continue
                failed = raises_proof_error(
                    partial(verify_inclusion, d[index], index, other, proof, root)
                )
                same_shape = path_shape(index, other) == path_shape(index, n)
                assert failed != same_shape, (n, index, other)


def test_size_changes_fail_exactly_when_the_consistency_shape_changes() -> None:
    for n in range(2, 20):
        d = leaves(n)
        new_root = root_hash(d)
        for m in range(1, n):
            proof = consistency_proof(d, m)
            old_root = root_hash(d[:m])
            shape = subproof_shape(m, n)
            for m2 in range(-1, 24):
                for n2 in range(m2 - 1, 24):
                    if (m2, n2) == (m, n):
                        continue
                    failed = raises_proof_error(
                        partial(verify_consistency, m2, n2, old_root, new_root, proof)
                    )
                    same_shape = subproof_shape(m2, n2) == shape
                    assert failed != same_shape, (m, n, m2, n2)


# --- property tests --------------------------------------------------------------------------


@st.composite
def tree_and_index(draw: st.DrawFn, min_size: int = 1) -> tuple[int, int]:
    n = draw(st.integers(min_value=min_size, max_value=300))
    return n, draw(st.integers(min_value=0, max_value=n - 1))


@st.composite
def tree_and_old_size(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=2, max_value=300))
    return n, draw(st.integers(min_value=1, max_value=n - 1))


PROPERTY = settings(max_examples=100, deadline=None)


@PROPERTY
@given(tree_and_index())
def test_property_inclusion_proof_verifies(case: tuple[int, int]) -> None:
    n, index = case
    d = leaves(n)
    verify_inclusion(d[index], index, n, inclusion_proof(d, index), root_hash(d))


@PROPERTY
@given(tree_and_index(min_size=2), st.data())
def test_property_inclusion_fails_on_any_proof_bit_flip(
    case: tuple[int, int], data: st.DataObject
) -> None:
    n, index = case
    d = leaves(n)
    proof = inclusion_proof(d, index)
    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    proof[element] = flip_bit(proof[element], bit)
    with pytest.raises(ProofError):
        verify_inclusion(d[index], index, n, proof, root_hash(d))


@PROPERTY
@given(tree_and_index(), st.integers(0, 255), st.booleans())
def test_property_inclusion_fails_on_root_or_leaf_bit_flip(
    case: tuple[int, int], bit: int, flip_root: bool
) -> None:
    n, index = case
    d = leaves(n)
    proof = inclusion_proof(d, index)
    root, leaf = root_hash(d), d[index]
    if flip_root:
        root = flip_bit(root, bit)
    else:
        leaf = flip_bit(leaf, bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, n, proof, root)


@PROPERTY
@given(tree_and_index(), st.data())
def test_property_inclusion_fails_at_another_index(
    case: tuple[int, int], data: st.DataObject
) -> None:
    n, index = case
    d = leaves(n)
    other = data.draw(st.integers(-3, n + 3).filter(lambda i: i != index), label="other")
    with pytest.raises(ProofError):
        verify_inclusion(d[index], other, n, inclusion_proof(d, index), root_hash(d))


@PROPERTY
@given(tree_and_index(), st.integers(-3, 400))
def test_property_inclusion_at_another_size_fails_unless_shape_is_equal(
    case: tuple[int, int], other: int
) -> None:
    n, index = case
    d = leaves(n)
    proof = inclusion_proof(d, index)
    root = root_hash(d)
    failed = raises_proof_error(lambda: verify_inclusion(d[index], index, other, proof, root))
    if other == n:
        assert not failed
    else:
        assert failed == (path_shape(index, other) != path_shape(index, n))


@PROPERTY
@given(tree_and_old_size())
def test_property_consistency_proof_verifies(case: tuple[int, int]) -> None:
    n, m = case
    d = leaves(n)
    verify_consistency(m, n, root_hash(d[:m]), root_hash(d), consistency_proof(d, m))


@PROPERTY
@given(tree_and_old_size(), st.data())
def test_property_consistency_fails_on_any_proof_bit_flip(
    case: tuple[int, int], data: st.DataObject
) -> None:
    n, m = case
    d = leaves(n)
    proof = consistency_proof(d, m)
    element = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    proof[element] = flip_bit(proof[element], bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, root_hash(d[:m]), root_hash(d), proof)


@PROPERTY
@given(tree_and_index(), st.integers(0, 255), st.booleans())
def test_property_consistency_fails_on_root_bit_flip(
    case: tuple[int, int], bit: int, flip_old: bool
) -> None:
    # tree_and_index gives 0 <= i < n, so old size i + 1 covers the equal-size case.
    n, i = case
    m = i + 1
    d = leaves(n)
    old, new = root_hash(d[:m]), root_hash(d)
    if flip_old:
        old = flip_bit(old, bit)
    else:
        new = flip_bit(new, bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, old, new, consistency_proof(d, m))


@PROPERTY
@given(tree_and_old_size(), st.integers(-2, 320), st.integers(-2, 320))
def test_property_consistency_at_other_sizes_fails_unless_shape_is_equal(
    case: tuple[int, int], m2: int, n2: int
) -> None:
    n, m = case
    d = leaves(n)
    proof = consistency_proof(d, m)
    failed = raises_proof_error(
        lambda: verify_consistency(m2, n2, root_hash(d[:m]), root_hash(d), proof)
    )
    if (m2, n2) == (m, n):
        assert not failed
    else:
        assert failed == (subproof_shape(m2, n2) != subproof_shape(m, n))


# --- speed ---------------------------------------------------------------------------------


def test_large_tree_proofs_verify() -> None:
    # speed is measured in bench/, not asserted here; this checks correctness at size
    n = 100_000
    d = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    tree = MerkleTree(d)
    assert tree.root == root_hash(d)
    verify_inclusion(d[54_321], 54_321, n, inclusion_proof(d, 54_321), tree.root)
    assert tree.inclusion_proof(54_321) == inclusion_proof(d, 54_321)
    proof = tree.consistency_proof(77_777)
    assert proof == consistency_proof(d, 77_777)
    verify_consistency(77_777, n, root_hash(d[:77_777]), tree.root, proof)
