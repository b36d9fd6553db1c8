"""Stored complete-subtree hashes: O(log n) roots and proofs, and C2SP tlog-tiles.

The table ``log_tree_hashes`` (:class:`~consentry.registry.models.TreeHash`) keeps,
for every complete subtree of the log's RFC 9162 Merkle tree, its hash at
``(level, idx)``: ``MTH`` of leaves ``[idx << level, (idx + 1) << level)``.

Invariants
----------
* Written only by :func:`append_leaf` / :func:`integrate` / :func:`insert_rows`
  (of :func:`rows_to_store`), inside the same write
  transaction as the leaf that completes the subtree (``Registry.append``), so a
  crash leaves both or neither; rows are never updated. An append writes the leaf
  hash plus one hash per subtree it completes: two rows amortised.
* Any range a proof asks for (see ``merkle.inclusion_proof_from``) is a fold of at
  most ``2 log2 n`` stored hashes (:func:`range_nodes`), so a root of any size
  ``m <= n`` and every inclusion or consistency proof read O(log n) rows and
  equal ``merkle.root_hash`` / ``merkle.inclusion_proof`` /
  ``merkle.consistency_proof`` over the same leaves (tested, with hypothesis).
* The stored hashes are trusted by the hot path only as far as they agree with
  the signed log: ``log verify`` recomputes them from the leaves
  (:func:`check_stored`, bounded memory) and names every one that differs; a
  forged hash can only make a proof that fails against an honest checkpoint; the
  consent follower binds the leaves it reads to the witnessed root through them
  (``registry.frontier``), and :func:`first_stored_mismatch` names the leaf when
  that fails.
* Tiles (C2SP tlog-tiles): tile ``L/N`` is the hashes of tree level ``8 L``,
  indexes ``256 N .. 256 N + W - 1``, concatenated; full tiles have ``W = 256``.
  Entry bundles are the leaves (the canonical JSON ``Registry.append`` hashed),
  each as a 2-byte big-endian length and the bytes, as tlog-tiles does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from sqlalchemy import Connection, func, insert
from sqlmodel import Session, col, select

from consentry.errors import LogIntegrityError, NotFoundError, RollbackError
from consentry.registry import merkle
from consentry.registry.db import core
from consentry.registry.models import LogEntry, TreeHash
from consentry.registry.raw_sql import RawStatement

__all__ = [
    "LAST_LOG_INDEX",
    "LAST_STORED_INDEX",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "StoredTree",
    "append_leaf",
    "check_stored",
    "encode_tile_index",
    "entry_bundle",
    "first_stored_mismatch",
    "insert_rows",
    "integrate",
    "log_size",
    "parse_entry_bundle",
    "parse_tile_path",
    "range_nodes",
    "rows_to_store",
    "sizes",
    "sizes_from",
    "stored_size",
    "sync",
    "tile",
    "tile_path",
]

TILE_HEIGHT = 8
"""Tree levels per tile level (tlog-tiles)."""
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile, and leaves in a full entry bundle."""

Node = tuple[int, int]  # (level, idx)
_CHUNK = 8192  # rows per query when streaming
_VERIFY_HINT = "run 'consentry log verify'"
_TABLE = TreeHash.__table__  # type: ignore[attr-defined]
_INSERT = insert(_TABLE)


def range_nodes(lo: int, hi: int) -> list[Node]:
    """The complete subtrees that tile ``[lo, hi)``, left to right, each as large as
    the alignment of its start allows. Folding their hashes right to left
    (:func:`fold`) gives ``MTH`` of the range for every range a proof asks for."""
    nodes: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """``node_hash`` the subtree hashes of :func:`range_nodes` together, right to left."""
    if not hashes:
        return merkle.EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = merkle.node_hash(left, acc)
    return acc


_STORED_MAX = select(func.max(TreeHash.idx)).where(TreeHash.level == 0)  # built once


def stored_size(session: Session) -> int:
    """How many leaves have stored hashes (level-0 rows are gap-free from 0)."""
    last = core(session).execute(_STORED_MAX).scalar()
    return 0 if last is None else int(last) + 1


# Node lookups join the table to a VALUES list of (level, idx) pairs: one primary-key
# search per pair, on SQLite and PostgreSQL alike (both name the columns column1,
# column2). Not ``(level, idx) IN (...)``: SQLite 3.40 plans that row-value IN as a
# scan of the whole table, which made every root and proof O(n). One statement text
# per pair count, built once.
_BATCH = 200


@functools.lru_cache(maxsize=_BATCH)
def _nodes_statement(count: int) -> RawStatement:
    """Run on the cursor (``raw_sql``): the lookup behind every root, proof and bind."""
    pairs = ", ".join(f"(:l{i}, :i{i})" for i in range(count))
    return RawStatement(
        f"SELECT t.level, t.idx, t.hash FROM (VALUES {pairs}) AS v "
        f"JOIN {TreeHash.__tablename__} AS t ON t.level = v.column1 AND t.idx = v.column2"
    )


def _fetch(session: Session | Connection, nodes: Iterable[Node]) -> dict[Node, bytes]:
    wanted = sorted(set(nodes))
    found: dict[Node, bytes] = {}
    for start in range(0, len(wanted), _BATCH):
        part = wanted[start : start + _BATCH]
        params: dict[str, int] = {}
        for i, (level, idx) in enumerate(part):
            params[f"l{i}"] = level
            params[f"i{i}"] = idx
        rows = _nodes_statement(len(part)).rows(core(session), params)
        for level, idx, value in rows:
            found[(int(level), int(idx))] = bytes(value)
    return found


class StoredTree:
    """The log's tree of ``size`` leaves, read from stored hashes in one query per
    root or proof. ``size`` must not exceed :func:`stored_size`; a missing or
    malformed stored hash raises ``LogIntegrityError`` naming it."""

    def __init__(self, session: Session | Connection, size: int) -> None:
        self._reads = session  # an ORM session, or a Core connection (one-statement reads)
        self.size = size
        self._cache: dict[Node, bytes] = {}

    def __len__(self) -> int:
        return self.size

    @property
    def session(self) -> Session:
        """The ORM session the tree reads in (a tree made on one)."""
        if not isinstance(self._reads, Session):
            raise TypeError("this stored tree reads on a Core connection, not a session")
        return self._reads

    def _load(self, nodes: Iterable[Node]) -> None:
        missing = {n for n in nodes if n not in self._cache}
        if not missing:
            return
        found = _fetch(self._reads, missing)
        for node in missing:
            value = found.get(node)
            if value is None or len(value) != merkle.HASH_SIZE:
                level, idx = node
                raise LogIntegrityError(
                    f"stored hash level {level} index {idx} is "
                    f"{'missing' if value is None else 'malformed'} (tree of {self.size})",
                    hint=_VERIFY_HINT,
                )
            self._cache[node] = value

    def _range_hash(self, lo: int, hi: int) -> bytes:
        return fold([self._cache[n] for n in range_nodes(lo, hi)])

    def _planned(self, build: Callable[[Callable[[int, int], bytes]], list[bytes]]) -> list[bytes]:
        ranges: list[tuple[int, int]] = []

        def record(lo: int, hi: int) -> bytes:
            ranges.append((lo, hi))
            return merkle.EMPTY_ROOT

        build(record)
        self._load(n for lo, hi in ranges for n in range_nodes(lo, hi))
        return build(self._range_hash)

    def root_at(self, size: int) -> bytes:
        """``MTH`` of the first ``size`` leaves (``0 <= size <= self.size``)."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is not in 0..{self.size}")
        nodes = range_nodes(0, size)
        self._load(nodes)
        return fold([self._cache[n] for n in nodes])

    @property
    def root(self) -> bytes:
        return self.root_at(self.size)

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash at ``index``."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} is outside a tree of size {self.size}")
        self._load([(0, index)])
        return self._cache[(0, index)]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Same as ``merkle.inclusion_proof`` over the first ``size`` leaves."""
        return self._planned(lambda rh: merkle.inclusion_proof_from(rh, index, self.size))

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Same as ``merkle.consistency_proof`` from ``old_size`` to ``size``."""
        return self._planned(lambda rh: merkle.consistency_proof_from(rh, old_size, self.size))


# --- writing ------------------------------------------------------------------------


def append_leaf(session: Session, index: int, leaf_hash: bytes) -> None:
    """Store leaf ``index``'s hash and every subtree it completes, in ``session``
    (the caller's write transaction). Leaves ``0..index - 1`` must be stored."""
    ones = 0
    while (index >> ones) & 1:
        ones += 1
    siblings = [(level, (index >> level) - 1) for level in range(ones)]
    found = _fetch(session, siblings) if siblings else {}
    rows = [{"level": 0, "idx": index, "hash": leaf_hash}]
    node = leaf_hash
    for level, sibling in enumerate(siblings):
        left = found.get(sibling)
        if left is None:
            raise LogIntegrityError(
                f"stored hash level {sibling[0]} index {sibling[1]} is missing: cannot "
                f"append leaf {index}",
                hint=_VERIFY_HINT,
            )
        node = merkle.node_hash(left, node)
        rows.append({"level": level + 1, "idx": index >> (level + 1), "hash": node})
    session.execute(_INSERT, rows)


def _frontier(session: Session | Connection, size: int) -> list[tuple[int, bytes]]:
    """The stored complete subtrees left of ``size``, as a (level, hash) stack."""
    nodes = range_nodes(0, size)
    found = _fetch(session, nodes)
    missing = [n for n in nodes if n not in found]
    if missing:
        raise LogIntegrityError(
            f"stored hash level {missing[0][0]} index {missing[0][1]} is missing"
        )
    return [(level, found[(level, idx)]) for level, idx in nodes]


def integrate(session: Session, start: int, leaf_hashes: Iterable[bytes]) -> int:
    """Store the hashes of leaves ``start, start + 1, ...`` (bulk: catch-up, upgrade,
    bench), batching inserts; returns the new stored size. Leaves before ``start``
    must already be stored."""
    rows: list[dict[str, object]] = []
    index = start
    for row in _rows_to_store(_frontier(session, start), start, leaf_hashes):
        rows.append(row)
        if row["level"] == 0:
            index += 1
        if len(rows) >= _CHUNK:
            session.execute(_INSERT, rows)
            rows = []
    if rows:
        session.execute(_INSERT, rows)
    return index


def rows_to_store(
    session: Session | Connection, start: int, leaf_hashes: Sequence[bytes]
) -> list[dict[str, object]]:
    """The stored-hash rows of leaves ``start, start + 1, ...`` (the leaves and every
    subtree they complete), reading only the stored right edge at ``start``; the
    caller inserts them (:func:`insert_rows`) in its write transaction. For a batch
    (bounded); :func:`integrate` streams a long catch-up."""
    return list(_rows_to_store(_frontier(session, start), start, leaf_hashes))


def insert_rows(session: Session | Connection, rows: list[dict[str, object]]) -> None:
    """Insert rows made by :func:`rows_to_store` (Core: see ``db.core``)."""
    if rows:
        core(session).execute(_INSERT, rows)


def _rows_to_store(
    stack: list[tuple[int, bytes]], start: int, leaf_hashes: Iterable[bytes]
) -> Iterator[dict[str, object]]:
    index = start
    for value in leaf_hashes:
        yield {"level": 0, "idx": index, "hash": value}
        node, level = value, 0
        position = index
        while stack and stack[-1][0] == level:
            node = merkle.node_hash(stack.pop()[1], node)
            level += 1
            position >>= 1
            yield {"level": level, "idx": position, "hash": node}
        stack.append((level, node))
        index += 1


def log_size(session: Session) -> int:
    """``max(idx) + 1`` of the log entries."""
    last = session.execute(select(func.max(LogEntry.idx))).scalar()
    return 0 if last is None else int(last) + 1


# the largest log index and the largest stored leaf index (None: none), as scalar
# subqueries a caller may put in a statement of its own (the sequencer's batch read)
LAST_LOG_INDEX = select(func.max(LogEntry.idx)).scalar_subquery()
LAST_STORED_INDEX = _STORED_MAX.scalar_subquery()
_SIZES = select(LAST_LOG_INDEX, LAST_STORED_INDEX)  # built once: one round trip for both


def sizes(session: Session) -> tuple[int, int]:
    """``(log_size, stored_size)`` read by one statement (in one snapshot)."""
    last_entry, last_stored = core(session).execute(_SIZES).one()
    return sizes_from(last_entry, last_stored)


def sizes_from(last_entry: object, last_stored: object) -> tuple[int, int]:
    """``(log_size, stored_size)`` from the values of :data:`LAST_LOG_INDEX` and
    :data:`LAST_STORED_INDEX` (None, an int, or its decimal text)."""
    return (
        0 if last_entry is None else int(str(last_entry)) + 1,
        0 if last_stored is None else int(str(last_stored)) + 1,
    )


def sync(session: Session) -> int:
    """Bring the stored hashes up to the log in ``session`` (a write transaction):
    store those of leaves that have none (a home made before stored hashes, an
    upgrade in place). Returns the log size. Raises ``RollbackError`` when
    stored hashes cover more leaves than the log holds (entries deleted): nothing
    is appended to, or signed for, a truncated log."""
    size = log_size(session)
    stored = stored_size(session)
    if stored > size:
        raise RollbackError(
            f"stored hashes cover {stored} entries but the log has {size}: log truncated",
            hint=_VERIFY_HINT,
        )
    start = stored
    while start < size:
        end = min(size, start + _CHUNK * 8)
        hashes = [
            bytes.fromhex(h)
            for h in session.execute(
                select(LogEntry.leaf_hash)
                .where(col(LogEntry.idx) >= start, col(LogEntry.idx) < end)
                .order_by(col(LogEntry.idx))
            ).scalars()
        ]
        if len(hashes) != end - start:
            raise LogIntegrityError(f"the log has a gap between entries {start} and {end}")
        start = integrate(session, start, hashes)
    return size


# --- checking -----------------------------------------------------------------------


def _level_chunk(session: Session, level: int, lo: int, hi: int) -> dict[int, bytes]:
    rows = session.execute(
        select(TreeHash.idx, TreeHash.hash).where(
            TreeHash.level == level, col(TreeHash.idx) >= lo, col(TreeHash.idx) < hi
        )
    )
    return {int(i): bytes(h) for i, h in rows}


def check_stored(session: Session, size: int) -> Iterator[str]:
    """Yield one problem per stored hash that differs from the log's leaves (the
    ``leaf_hash`` column, which ``log verify`` checks against each leaf), is missing,
    or covers entries the log does not have. Level 0 is compared with the leaves,
    each higher level with the level below (already checked), in chunks: memory is
    bounded by the chunk size, not the log."""
    yield from _check_past_end(session, size)
    yield from _check_leaf_level(session, size)
    level = 0
    while (size >> (level + 1)) > 0:
        yield from _check_level_above(session, level, size >> (level + 1))
        level += 1


def _check_past_end(session: Session, size: int) -> Iterator[str]:
    """Stored hashes covering entries past the log's end."""
    tops = session.execute(
        select(TreeHash.level, func.max(TreeHash.idx)).group_by(col(TreeHash.level))
    ).all()
    for level, idx in tops:
        if (int(idx) + 1) << int(level) > size:
            yield (
                f"stored hash level {level} index {idx} ({tile_name(int(level), int(idx))}) "
                f"covers entries past the log's {size}: log truncated, or the hash is forged"
            )


def _check_leaf_level(session: Session, size: int) -> Iterator[str]:
    """Level 0 against the log's ``leaf_hash`` column, a chunk at a time."""
    for start in range(0, size, _CHUNK):
        end = min(size, start + _CHUNK)
        leaves = session.execute(
            select(LogEntry.idx, LogEntry.leaf_hash).where(
                col(LogEntry.idx) >= start, col(LogEntry.idx) < end
            )
        )
        stored = _level_chunk(session, 0, start, end)
        for idx, value in leaves:
            if stored.get(int(idx)) != bytes.fromhex(value):
                yield _bad(0, int(idx), stored.get(int(idx)))


def _check_level_above(session: Session, level: int, count: int) -> Iterator[str]:
    """The ``count`` hashes of ``level + 1`` against their children (``level``)."""
    for start in range(0, count, _CHUNK):
        end = min(count, start + _CHUNK)
        below = _level_chunk(session, level, 2 * start, 2 * end)
        above = _level_chunk(session, level + 1, start, end)
        for idx in range(start, end):
            left, right = below.get(2 * idx), below.get(2 * idx + 1)
            if left is None or right is None:
                continue  # already reported one level down
            if above.get(idx) != merkle.node_hash(left, right):
                yield _bad(level + 1, idx, above.get(idx))


def first_stored_mismatch(session: Session, start: int, hashes: Sequence[bytes]) -> int | None:
    """The first index ``i >= start`` whose stored leaf hash is not ``hashes[i - start]``
    (or is missing), in chunks; None when all agree."""
    for lo in range(0, len(hashes), _CHUNK):
        hi = min(len(hashes), lo + _CHUNK)
        stored = _level_chunk(session, 0, start + lo, start + hi)
        for offset in range(lo, hi):
            if stored.get(start + offset) != hashes[offset]:
                return start + offset
    return None


def _bad(level: int, idx: int, value: bytes | None) -> str:
    where = f"stored hash level {level} index {idx} ({tile_name(level, idx)})"
    if value is None:
        return f"{where} is missing"
    return f"{where} differs from the one recomputed from the leaves (forged stored hash)"


# --- tiles --------------------------------------------------------------------------


def encode_tile_index(index: int) -> str:
    """tlog-tiles index encoding: 3-digit groups, all but the last prefixed with x."""
    if index < 0:
        raise ValueError("a tile index is never negative")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` (``level`` may be ``"entries"``)."""
    path = f"tile/{level}/{encode_tile_index(index)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def tile_name(level: int, idx: int) -> str:
    """The tile that holds the stored hash at tree ``level``, ``idx`` (or, for a
    level between tile levels, the one its hash is computed from)."""
    tile_level = level // TILE_HEIGHT
    base_idx = idx << (level - tile_level * TILE_HEIGHT)
    return f"tile {tile_level}/{base_idx // TILE_WIDTH}"


_GROUP = re.compile(r"^x\d{3}$")
_LAST = re.compile(r"^\d{3}(\.p)?$")


def parse_tile_path(path: str) -> tuple[int | None, int, int]:
    """Parse ``<L>/<N>[.p/<W>]`` or ``entries/<N>[.p/<W>]`` (without ``tile/``) into
    (level or None for entries, index, width). Raises ``NotFoundError`` for any
    path that is not canonical tlog-tiles (no leading zeros, W in 1..255)."""
    parts = path.strip("/").split("/")
    if len(parts) < 2:
        raise NotFoundError(f"not a tile path: {path!r}")
    head, rest = parts[0], parts[1:]
    level: int | None
    if head == "entries":
        level = None
    elif head.isdigit() and str(int(head)) == head and int(head) < 64:
        level = int(head)
    else:
        raise NotFoundError(f"bad tile level in {path!r}")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        text = rest[-1]
        if not text.isdigit() or str(int(text)) != text or not 0 < int(text) < TILE_WIDTH:
            raise NotFoundError(f"bad partial tile width in {path!r}")
        width = int(text)
        rest = rest[:-1]
    elif rest[-1].endswith(".p"):
        raise NotFoundError(f"partial tile without a width in {path!r}")
    if not _LAST.match(rest[-1]) or not all(_GROUP.match(g) for g in rest[:-1]):
        raise NotFoundError(f"bad tile index in {path!r}")
    digits = "".join(g.lstrip("x") for g in rest[:-1]) + rest[-1][:3]
    index = int(digits)
    if encode_tile_index(index) != "/".join(rest).removesuffix(".p"):
        raise NotFoundError(f"tile index not canonical in {path!r}")
    if (width != TILE_WIDTH) != rest[-1].endswith(".p"):
        raise NotFoundError(f"bad partial tile path {path!r}")
    return level, index, width


def _check_width(count: int, index: int, width: int, what: str) -> None:
    if TILE_WIDTH * index + width > count:
        raise NotFoundError(
            f"{what} {index} of width {width} is not in the log yet ({count} available)"
        )


def tile(session: Session, level: int, index: int, width: int, size: int) -> bytes:
    """Tile ``level/index`` of width ``width`` of the tree of ``size`` leaves."""
    tree_level = level * TILE_HEIGHT
    count = size >> tree_level
    _check_width(count, index, width, f"tile {level}/")
    lo = TILE_WIDTH * index
    found = _level_chunk(session, tree_level, lo, lo + width)
    if len(found) != width:
        raise LogIntegrityError(f"tile {level}/{index}: stored hashes missing")
    return b"".join(found[i] for i in range(lo, lo + width))


def entry_bundle(session: Session, index: int, width: int, size: int) -> bytes:
    """Entry bundle ``index`` of width ``width``: each leaf as a big-endian uint16
    length and its bytes. A leaf of 65,536 bytes or more cannot be encoded and
    raises ``LogIntegrityError`` (none is written by this release)."""
    _check_width(size, index, width, "entry bundle")
    lo = TILE_WIDTH * index
    rows = session.execute(
        select(LogEntry.idx, LogEntry.leaf_json)
        .where(col(LogEntry.idx) >= lo, col(LogEntry.idx) < lo + width)
        .order_by(col(LogEntry.idx))
    ).all()
    if len(rows) != width:
        raise LogIntegrityError(f"entry bundle {index}: log entries missing")
    out = bytearray()
    for idx, leaf in rows:
        data = leaf.encode()
        if len(data) > 0xFFFF:
            raise LogIntegrityError(f"log entry {idx} is too long for an entry bundle")
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """The leaves of an entry bundle (the inverse of :func:`entry_bundle`)."""
    leaves: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise LogIntegrityError("entry bundle ends inside a length")
        length = int.from_bytes(data[at : at + 2], "big")
        at += 2
        if at + length > len(data):
            raise LogIntegrityError("entry bundle ends inside an entry")
        leaves.append(data[at : at + length])
        at += length
    return leaves
