"""Recover a release whose manifest was stripped: watermark, then log, then fingerprint.

:func:`recover_release` finds the decision an image was released under from its
pixels alone: the watermark decodes to a release id; the registry's decision with
that id is read from the **signed log** (the leaf at its index, its envelope verified
under the operator key in force there), never from the row; one of the outputs that
statement lists must have a fingerprint that agrees with the image's
(:func:`consentry.provenance.fingerprint.agrees`).

Invariants
- Never recovered without all three: a watermark that decodes (CRC-checked, so
  exact), a signed *allowed* decision carrying that release id, and an output of it
  whose ISCC and PDQ both agree. A look-alike (no watermark) and a copied
  watermark (on other pixels: the fingerprint disagrees) are not recovered.
- Returns a reason instead of raising for anything the image gets wrong;
  LogIntegrityError (the registry's own log is broken) propagates.
- The grants are the caller's to judge (``verify_media`` does, at the log index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sqlmodel import col, select

from consentry.errors import ConsentryError, InputError, LogIntegrityError
from consentry.provenance.fingerprint import (
    ISCC_ALG,
    ISCC_MAX_BITS,
    PDQ_ALG,
    PDQ_MAX_BITS,
    Fingerprint,
    agrees,
    distances,
    fingerprint,
    iscc_bits,
)
from consentry.provenance.watermark import WATERMARK_ALG, decode
from consentry.registry.decisions import decision_of_release, get_decision
from consentry.registry.models import Decision
from consentry.registry.signing import Envelope, parse_canonical

if TYPE_CHECKING:
    from consentry.registry.consent import ConsentState
    from consentry.registry.store import Registry

__all__ = ["Recovered", "matches_by_binding", "recover_release", "signed_decision"]


@dataclass(frozen=True)
class Recovered:
    """A recovered release: the signed decision statement, its log index, which
    output the image is, and the fingerprint distances (ISCC bits, PDQ bits)."""

    statement: dict[str, Any]
    log_index: int
    release_id: str
    output: int
    distances: tuple[int, int]


def _signed_statement(registry: Registry, state: ConsentState, index: int) -> dict[str, Any]:
    if not 0 <= index < state.size:
        raise InputError(f"log index {index} is not in this registry's signed log")
    body = parse_canonical(registry.entry(index).leaf_json.encode())
    envelope = Envelope.from_json(body.get("envelope", {}))
    active = state.key_active_at(index)
    if active is None or active not in envelope.key_ids:
        raise InputError(f"log entry {index} is not signed by the key in force there")
    envelope.verify(state.operator_keys(), [active])
    statement = dict(envelope.statement)
    if body.get("kind") != "decision" or statement.get("type") != "consentry.decision":
        raise InputError(f"log entry {index} is not a decision")
    return statement


def _matching_output(
    statement: dict[str, Any], release_id: str, seen: Fingerprint
) -> tuple[int, tuple[int, int]] | str:
    release = statement.get("release")
    if not isinstance(release, dict) or release.get("id") != release_id:
        return "the signed decision does not carry this release id"
    for n, mark in enumerate(release.get("outputs") or ()):
        try:
            logged = Fingerprint.from_json(mark)
        except InputError:
            continue
        if agrees(logged, seen):
            return n, distances(logged, seen)
    return "the watermark names a release whose fingerprints disagree with this image"


def recover_release(
    registry: Registry, pixels: NDArray[np.uint8]
) -> tuple[Recovered | None, str]:
    """The release ``pixels`` were released under, or None and why not (see the
    invariants). ``pixels``: RGB uint8."""
    found = decode(pixels)
    if found.release_id is None:
        return None, "no watermark decodes from the image"
    row = decision_of_release(registry, found.release_id)
    if row is None:
        return None, f"watermark {found.release_id} names no release of this registry"
    state = registry.consent
    state.refresh()
    try:
        statement = _signed_statement(registry, state, row.log_index)
    except LogIntegrityError:
        raise
    except ConsentryError as exc:
        return None, f"the release's decision does not verify: {exc}"
    if statement.get("id") != row.id:
        return None, f"log entry {row.log_index} is not decision {row.id}"
    if statement.get("allowed") is not True:
        return None, f"release {found.release_id} was refused (decision {row.id})"
    match = _matching_output(statement, found.release_id, fingerprint(pixels))
    if isinstance(match, str):
        return None, match
    output, dist = match
    return Recovered(statement, row.log_index, found.release_id, output, dist), ""


def signed_decision(registry: Registry, decision_id: str) -> tuple[dict[str, Any], int]:
    """The signed statement of decision ``decision_id`` as its log leaf holds it, and
    its index; NotFoundError/InputError when there is none or it does not verify."""
    row = get_decision(registry, decision_id)
    state = registry.consent
    state.refresh()
    statement = _signed_statement(registry, state, row.log_index)
    if statement.get("id") != row.id:
        raise InputError(f"log entry {row.log_index} is not decision {row.id}")
    return statement, row.log_index


def _fingerprint_distance(alg: str, value: bytes, mark: dict[str, Any]) -> int | None:
    import iscc_core

    if alg == ISCC_ALG:
        seen = iscc_bits("ISCC:" + iscc_core.encode_base32(value))
        d = (seen ^ iscc_bits(str(mark["iscc"]))).bit_count()
        return d if d <= ISCC_MAX_BITS else None
    d = (int.from_bytes(value, "big") ^ int(str(mark["pdq"]), 16)).bit_count()
    return d if d <= PDQ_MAX_BITS else None


def matches_by_binding(registry: Registry, alg: str, value: bytes) -> list[dict[str, Any]]:
    """Allowed releases a soft-binding value points to, best first, in the shape of the
    C2PA Soft Binding Resolution API (``manifestId``: the decision id;
    ``similarityScore`` 0-100 for a fingerprint). The watermark's id is exact; a
    fingerprint matches within its threshold (a look-alike is a candidate here, never
    a recovery). InputError for an unknown algorithm or a malformed value."""
    if alg == WATERMARK_ALG:
        if len(value) != 8:
            raise InputError("a watermark binding value is the 8-byte release id")
        row = decision_of_release(registry, value.hex())
        return [{"manifestId": row.id}] if row is not None and row.allowed else []
    if alg not in (ISCC_ALG, PDQ_ALG):
        raise InputError(f"unsupported soft-binding algorithm {alg!r}")
    if alg == PDQ_ALG and len(value) != 32:
        raise InputError("a PDQ binding value is 32 bytes")
    with registry.db.read() as session:
        rows = session.exec(
            select(Decision).where(col(Decision.release_id).is_not(None), Decision.allowed)
        ).all()
    found: list[tuple[int, str]] = []
    for row in rows:
        try:
            near = [_fingerprint_distance(alg, value, m) for m in row.marks]
        except ValueError as exc:
            raise InputError(f"not an {alg} binding value: {exc}") from exc
        best = min((d for d in near if d is not None), default=None)
        if best is not None:
            found.append((best, row.id))
    bits = 64 if alg == ISCC_ALG else 256
    return [
        {"manifestId": decision_id, "similarityScore": round(100 * (1 - d / bits))}
        for d, decision_id in sorted(found)
    ]
