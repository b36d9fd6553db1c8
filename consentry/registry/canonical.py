"""RFC 8785 (JCS) canonical JSON: the bytes every signed statement is made of.

In a module of its own, with only the standard library and ``rfc8785`` beneath it,
so that code that serialises without signing (training configs, the CLI's start-up)
does not load ``cryptography``. :mod:`consentry.registry.signing` re-exports it.

Invariant: :func:`canonical_json` is byte-identical to ``rfc8785.dumps`` for every
JSON value (tested against it, including floats, large integers, non-ASCII keys
and lone surrogates); the standard-library fast path is taken only for values
where the two spellings provably agree (:func:`_plain`).
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

__all__ = ["canonical_json"]

_MAX_SAFE_INT = 2**53 - 1


def _plain(value: Any) -> bool:  # noqa: C901  (one inlined loop: 2x faster than helpers, measured)
    """True when ``json.dumps(sort_keys=True)`` spells ``value`` exactly as RFC 8785 does:
    no floats, integers within IEEE-754's exact range, ASCII keys (so code-point and
    UTF-16 key orders agree), and strings without lone surrogates.

    Walks the value with an explicit stack over the exact JSON types (the hot path:
    every statement signed or followed); anything else, subclasses included, takes
    :func:`_plain_any`, the same rules spelled with ``isinstance``."""
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return False
        elif kind is dict:
            for key, inner in item.items():
                if not (isinstance(key, str) and key.isascii()):
                    return False
                push(inner)
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is int:
            if not -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                return False
        elif item is not None and kind is not bool and not _plain_any(item):
            return False
    return True


def _plain_any(value: Any) -> bool:
    """:func:`_plain` for any value (the recursive reference spelling)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value.isascii() or not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain_any(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_any(v) for v in value)
    return False


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` as RFC 8785 (JCS) canonical JSON bytes.

    Values without floats take the standard library's encoder, whose output for
    them is byte-identical to JCS (tested against ``rfc8785``); others go through
    ``rfc8785`` itself.
    """
    if _plain(value):
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    return bytes(rfc8785.dumps(value))
