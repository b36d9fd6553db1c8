"""The compact range of a log prefix, and its binding to the stored, witnessed tree.

A :class:`Frontier` is the right edge of the RFC 9162 tree of the first ``size``
leaves: the hashes of the complete subtrees ``tiles.range_nodes(0, size)``, at most
``log2(size) + 1`` of them. Pushing leaf hashes one by one keeps it (amortised
two hashes per leaf); folding it right to left gives the prefix root. It is what
a reader that streams the log (``log verify``, the consent follower) keeps instead
of every leaf hash.

:func:`bind_prefix` is how such a reader proves that the leaves it read are the
log's: the root it computed must be consistent (RFC 9162 consistency proof from
stored hashes, checked with ``merkle.verify_consistency``) with the checkpoint
this process last proved its witness state to hold (``registry.log.witnessed_root``),
or, with no such checkpoint (a party that trusts on first use), equal the stored
tree's root at that size. O(log n) stored hashes either way.

Invariants
----------
* A frontier only ever holds the subtree hashes of ``range_nodes(0, size)``, in
  that order (levels strictly decreasing); :meth:`Frontier.from_json` refuses any
  other shape.
* ``bind_prefix`` succeeds only if the leaves folded into ``root`` are, bit for
  bit, the first ``size`` leaves of a tree consistent with the anchor checkpoint
  (collision resistance of SHA-256): a leaf rewritten in the database, with or
  without its stored leaf hash, with or without its ancestors, makes it raise
  :class:`LogIntegrityError` (or the anchor proof fails at open: ``RollbackError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session

from consentry.errors import LogIntegrityError, ProofError
from consentry.registry import merkle, tiles

__all__ = ["Frontier", "bind_prefix"]


class Frontier:
    """The complete-subtree hashes of the first ``size`` leaves (see module doc)."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing

    def push(self, leaf_hash: bytes) -> None:
        """Append one leaf hash."""
        node, level = leaf_hash, 0
        stack = self._stack
        while stack and stack[-1][0] == level:
            node = merkle.node_hash(stack.pop()[1], node)
            level += 1
        stack.append((level, node))
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for value in leaf_hashes:
            self.push(value)

    @property
    def root(self) -> bytes:
        """RFC 9162 root of the first ``size`` leaves."""
        if not self._stack:
            return merkle.EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc

    def copy(self) -> Frontier:
        other = Frontier()
        other.size = self.size
        other._stack = list(self._stack)
        return other

    def to_json(self) -> list[list[Any]]:
        return [[level, value.hex()] for level, value in self._stack]

    @classmethod
    def from_json(cls, size: int, nodes: Any) -> Frontier:
        """The frontier of ``size`` leaves from :meth:`to_json`; ``ValueError`` unless
        its shape is exactly that of ``range_nodes(0, size)``."""
        expected = [level for level, _ in tiles.range_nodes(0, size)]
        if not isinstance(nodes, list) or [n[0] for n in nodes] != expected:
            raise ValueError("frontier does not have the shape of its tree size")
        frontier = cls()
        frontier.size = size
        for level, text in nodes:
            value = bytes.fromhex(str(text))
            if len(value) != merkle.HASH_SIZE:
                raise ValueError("frontier hash is not 32 bytes")
            frontier._stack.append((int(level), value))
        return frontier


def bind_prefix(
    session: Session,
    size: int,
    root: bytes,
    anchor: tuple[int, bytes] | None,
    stored: int | None = None,
) -> None:
    """Check that ``root``, computed by the caller from the first ``size`` leaves it
    read, belongs to the log's tree (see module doc); ``LogIntegrityError`` if not.

    ``anchor`` is ``(tree size, root)`` of the checkpoint the witness state was
    proved to hold, or None. An anchor past what ``session`` sees (a session older
    than the proof) binds to the stored root instead; the next bind covers it.
    ``stored``: ``tiles.stored_size(session)`` when the caller has it.
    """
    if size == 0:
        return
    if stored is None:
        stored = tiles.stored_size(session)
    if anchor is not None and 0 < anchor[0] <= stored:
        witnessed_size, witnessed_root = anchor
        far = max(size, witnessed_size)
        if far > stored:
            raise LogIntegrityError(
                f"the log's stored tree covers {stored} entries, {size} were followed"
            )
        tree = tiles.StoredTree(session, far)
        try:
            if size <= witnessed_size:
                proof = tree.consistency_proof(size) if size < far else []
                merkle.verify_consistency(size, far, root, witnessed_root, proof)
            else:
                proof = tree.consistency_proof(witnessed_size)
                merkle.verify_consistency(witnessed_size, far, witnessed_root, root, proof)
        except ProofError as exc:
            raise LogIntegrityError(
                f"the first {size} log entries are not those of the witnessed tree of "
                f"size {witnessed_size} ({exc}): the log was rewritten in the database"
            ) from exc
        return
    if size > stored:
        raise LogIntegrityError(
            f"the log's stored tree covers {stored} entries, {size} were followed"
        )
    if tiles.StoredTree(session, size).root_at(size) != root:
        raise LogIntegrityError(
            f"the first {size} log entries differ from the stored tree: "
            "the log was rewritten in the database"
        )
