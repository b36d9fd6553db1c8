"""The public log in the C2SP tlog-tiles shape, for mirrors and auditors.

Routes (no authentication: the log is public, as ``/v1/log/*`` is):

- ``GET /checkpoint``: the newest signed checkpoint note (``text/plain``).
- ``GET /tile/<L>/<N>[.p/<W>]``: tile ``L/N`` of the tree of that checkpoint, the
  hashes of tree level ``8 L``, indexes ``256 N .. 256 N + W - 1``, each 32 bytes,
  concatenated (``application/octet-stream``). ``N`` uses the tlog-tiles encoding
  (3-digit groups, all but the last prefixed with ``x``: ``x001/x234/067``).
- ``GET /tile/entries/<N>[.p/<W>]``: entry bundle ``N``: leaves ``256 N ..``, each
  as a 2-byte big-endian length and the leaf bytes (the canonical JSON whose RFC
  9162 ``leaf_hash`` is the level-0 hash; ``registry.tiles.parse_entry_bundle``).

Invariants: only what the newest checkpoint covers is served (a tile or bundle past
it is 404), so every byte served is checkable against a signed root; full tiles
never change (cached as immutable), partial tiles are the newest width only or an
older width (both are prefixes of the same immutable hashes). A path that is not
canonical tlog-tiles is 404. The server checks nothing for the client: a mirror
verifies the tiles against the checkpoint (``tests/integration/test_tiles_api.py``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from consentry.registry import checkpoint as cp
from consentry.registry import tiles
from consentry.server.state import ServiceDep

__all__ = ["router"]

_IMMUTABLE = "public, max-age=31536000, immutable"
_FRESH = "no-cache"

router = APIRouter(tags=["log"])


@router.get("/checkpoint", response_class=PlainTextResponse)
def checkpoint(state: ServiceDep) -> PlainTextResponse:
    """The newest signed checkpoint (a C2SP signed note)."""
    latest = state.registry.latest_checkpoint()
    return PlainTextResponse(latest, headers={"Cache-Control": _FRESH})


@router.get("/tile/{path:path}")
def tile(state: ServiceDep, path: str) -> Response:
    """A hash tile or an entry bundle of the newest checkpoint's tree."""
    registry = state.registry
    level, index, width = tiles.parse_tile_path(path)
    size = cp.parse_checkpoint(registry.latest_checkpoint())[0].tree_size
    with registry.db.read() as session:
        if level is None:
            body = tiles.entry_bundle(session, index, width, size)
        else:
            body = tiles.tile(session, level, index, width, size)
    cache = _IMMUTABLE if width == tiles.TILE_WIDTH else _FRESH
    return Response(body, media_type="application/octet-stream", headers={"Cache-Control": cache})
