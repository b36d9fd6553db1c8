"""``registry.frontier``: the compact range of a prefix, and its binding to a tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, SQLModel, create_engine

from consentry.errors import LogIntegrityError
from consentry.registry import merkle, tiles
from consentry.registry.frontier import Frontier, bind_prefix


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"leaf %d" % i) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_frontier_root_is_the_prefix_root_and_survives_json(n: int) -> None:
    leaves = _leaves(n)
    frontier = Frontier()
    for count, leaf in enumerate(leaves, start=1):
        frontier.push(leaf)
        if count in (1, n // 2 + 1, n):
            assert frontier.root == merkle.root_hash(leaves[:count])
    assert frontier.size == n and frontier.root == merkle.root_hash(leaves)
    again = Frontier.from_json(n, frontier.to_json())
    again.extend(_leaves(n + 3)[n:])
    assert again.root == merkle.root_hash(_leaves(n + 3))


def test_a_frontier_of_another_shape_is_refused() -> None:
    frontier = Frontier()
    frontier.extend(_leaves(6))  # subtrees of 4 and 2 leaves
    nodes = frontier.to_json()
    with pytest.raises(ValueError, match="shape"):
        Frontier.from_json(7, nodes)
    with pytest.raises(ValueError, match="shape"):
        Frontier.from_json(6, nodes[::-1])
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier.from_json(6, [nodes[0], [nodes[1][0], "00"]])


@pytest.fixture
def session(tmp_path: Path) -> Session:
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    SQLModel.metadata.create_all(engine)
    return Session(engine)


def test_bind_prefix_accepts_the_log_and_refuses_any_other_leaf(session: Session) -> None:
    leaves = _leaves(37)
    for index, leaf in enumerate(leaves):
        tiles.append_leaf(session, index, leaf)
    tree = tiles.StoredTree(session, 37)
    for size in (1, 20, 37):
        frontier = Frontier()
        frontier.extend(leaves[:size])
        bind_prefix(session, size, frontier.root, None)  # the stored tree
        for anchor in (5, 20, 32, 37):  # a witnessed checkpoint before, at, after
            bind_prefix(session, size, frontier.root, (anchor, tree.root_at(anchor)))
        forged = Frontier()
        forged.extend([*leaves[: size - 1], hashlib.sha256(b"forged").digest()])
        for anchor in (None, (20, tree.root_at(20)), (37, tree.root)):
            with pytest.raises(LogIntegrityError):
                bind_prefix(session, size, forged.root, anchor)
    with pytest.raises(LogIntegrityError, match="covers 37"):
        bind_prefix(session, 38, merkle.root_hash(leaves), None)
