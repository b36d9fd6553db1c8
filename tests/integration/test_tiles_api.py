"""An outside auditor mirrors the log only through the tlog-tiles routes
(``/checkpoint``, ``/tile/<L>/<N>``, ``/tile/entries/<N>``) of a real uvicorn on
loopback, and verifies the checkpoint's root and inclusion proofs from the tiles;
a forged stored hash shows up as a tile that does not verify."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

from consentry.faces.engines import get_engine
from consentry.registry import checkpoint as cp
from consentry.registry import merkle
from consentry.registry.signing import checkpoint_key_name, load_public_key
from consentry.registry.store import Registry
from consentry.registry.tiles import parse_entry_bundle, tile_path
from consentry.server import create_app, hash_admin_key
from tests.integration._live import live_server

SUBJECTS = 600  # 601 entries: two full level-0 tiles, a partial one, level 1 of width 2


@dataclass
class Served:
    registry: Registry
    base: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    registry = Registry.init(tmp_path_factory.mktemp("tiles") / "home", None)
    for i in range(SUBJECTS):
        registry.add_subject(f"Person {i}")
    registry.checkpoint()
    app = create_app(registry, get_engine("sface"), hash_admin_key("k" * 32))
    try:
        with live_server(app) as base:
            yield Served(registry, base)
    finally:
        registry.close()


class Mirror:
    """What an auditor holds after fetching a checkpoint's tiles: nothing trusted
    but the operator's public key."""

    def __init__(self, http: httpx.Client, operator: Ed25519PublicKey, key_id: str) -> None:
        self._http = http
        response = http.get("/checkpoint")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        self.checkpoint = cp.verify_checkpoint(response.text, checkpoint_key_name(key_id), operator)
        size = self.size = self.checkpoint.tree_size
        self.leaves: list[bytes] = []
        self.level0: list[bytes] = []
        for n in range((size + 255) // 256):
            width = min(256, size - 256 * n)
            self.leaves += parse_entry_bundle(self._get(tile_path("entries", n, width)))
            self.level0 += self._hashes(self._get(tile_path(0, n, width)))
        self.level8 = self._hashes(self._get(tile_path(1, 0, size // 256))) if size >= 256 else []

    def _get(self, path: str) -> bytes:
        response = self._http.get("/" + path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/octet-stream"
        return response.content

    @staticmethod
    def _hashes(data: bytes) -> list[bytes]:
        assert len(data) % 32 == 0
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def problems(self) -> list[str]:
        """Everything the tiles fail to prove against the signed checkpoint."""
        found = []
        for i, (leaf, stored) in enumerate(zip(self.leaves, self.level0, strict=True)):
            if merkle.leaf_hash(leaf) != stored:
                found.append(f"tile 0 hash {i} is not the hash of entry {i}")
        for k, node in enumerate(self.level8):
            if merkle.root_hash(self.level0[256 * k : 256 * k + 256]) != node:
                found.append(f"tile 1 hash {k} is not the root of tile 0/{k}")
        if merkle.root_hash(self.level0) != self.checkpoint.root_hash:
            found.append("the tiles' root is not the checkpoint's")
        return found

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) from the tiles, using level-8 hashes where whole."""
        if hi - lo == 256 and lo % 256 == 0:
            return self.level8[lo // 256]
        return merkle.root_hash(self.level0[lo:hi])

    def prove(self, index: int) -> list[bytes]:
        return merkle.inclusion_proof_from(self.range_hash, index, self.size)


def _mirror(served: Served, http: httpx.Client) -> Mirror:
    operator = load_public_key(served.registry.home.operator_public)
    return Mirror(http, operator, served.registry.key_id)


def test_a_mirror_verifies_the_root_and_inclusion_proofs_from_tiles(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=30) as http:
        mirror = _mirror(served, http)
        assert mirror.size == SUBJECTS + 1 and len(mirror.level8) == 2
        assert mirror.problems() == []
        for index in (0, 255, 256, 300, 511, 512, SUBJECTS):
            proof = mirror.prove(index)
            merkle.verify_inclusion(
                mirror.level0[index], index, mirror.size, proof, mirror.checkpoint.root_hash
            )
            served_proof = http.get(f"/v1/log/proof/{index}").json()  # the old route agrees
            assert served_proof["hashes"] == [h.hex() for h in proof]


@pytest.mark.parametrize(
    ("level", "idx", "expected"),
    [(0, 300, "tile 0 hash 300"), (8, 1, "tile 1 hash 1")],
    ids=["leaf hash in tile 0/1", "level-8 hash in tile 1/0"],
)
def test_a_forged_stored_hash_is_a_tile_the_mirror_refuses(
    served: Served, level: int, idx: int, expected: str
) -> None:
    db = served.registry.db
    query = "SELECT hash FROM log_tree_hashes WHERE level = :l AND idx = :i"
    with db.reader.connect() as conn:
        original = bytes(conn.execute(text(query), {"l": level, "i": idx}).scalar_one())
    update = "UPDATE log_tree_hashes SET hash = :h WHERE level = :l AND idx = :i"
    with db.writer.begin() as conn:
        conn.execute(text(update), {"h": hashlib.sha256(b"x").digest(), "l": level, "i": idx})
    try:
        with httpx.Client(base_url=served.base, timeout=30) as http:
            problems = _mirror(served, http).problems()
        assert any(expected in p for p in problems), problems
    finally:
        with db.writer.begin() as conn:
            conn.execute(text(update), {"h": original, "l": level, "i": idx})
    with httpx.Client(base_url=served.base, timeout=30) as http:
        assert _mirror(served, http).problems() == []  # honest again: verifies


@pytest.mark.parametrize(
    "path",
    [
        "/tile/0/003",
        "/tile/0/002.p/90",
        "/tile/1/000",
        "/tile/2/000.p/1",
        "/tile/entries/003",
        "/tile/0/2",
        "/tile/0/x000/002",
        "/tile/entries/002.p/0",
        "/tile/0/002.p",
    ],
)
def test_tiles_past_the_checkpoint_or_non_canonical_are_404(served: Served, path: str) -> None:
    with httpx.Client(base_url=served.base, timeout=30) as http:
        assert http.get(path).status_code == 404
        assert http.get("/tile/0/002.p/89").status_code == 200  # the newest partial tile
