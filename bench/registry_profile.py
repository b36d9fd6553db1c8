"""What ``python -m bench registry --profile`` looks for in a profile: the grant and
``verify_log`` call trees, as (label, function) pairs.

:func:`breakdown` turns a cProfile run into per-call cumulative times of exactly those
functions (code objects pinned to their file and first line; a name that no longer
exists in Consentry drops out rather than failing the bench).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session as SASession

from bench import registry_whatif as whatif
from bench._common import cumulative_breakdown
from consentry.registry import merkle, verify
from consentry.registry.db import Database
from consentry.registry.log import RegistryLog
from consentry.registry.signing import (
    Envelope,
    SigningKey,
    canonical_json,
    key_id_of,
    parse_canonical,
)
from consentry.registry.statements import statement_of
from consentry.registry.store import Registry

__all__ = ["breakdown", "grant_breakdown", "verify_breakdown"]


def _code(fn: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(fn, "__func__", fn)


def grant_breakdown() -> list[tuple[str, Any]]:
    """(label, function or "file-suffix:name") pairs; names that no longer exist drop out."""
    m = whatif.method
    return [
        ("Registry.grant (total)", Registry.grant),
        ("  get_subject (read session + SELECT)", Registry.get_subject),
        ("  get_grantee (read session + SELECT)", Registry.get_grantee),
        ("  _sign_and_append", m(Registry, "_sign_and_append", "sign_and_append")),
        ("    Database.write (session, lock, commit)",
         getattr(Database.write, "__wrapped__", None)),
        ("      Session.commit", SASession.commit),
        ("    signing_key (Session.get OperatorKey)", m(RegistryLog, *whatif.SIGNING_KEY)),
        ("    Envelope.sign", _code(Envelope.sign)),
        ("      Ed25519 sign (cryptography)", "~:<method 'sign' of"),
        (f"    {whatif.APPEND_NAME} (SELECT max(idx), flush)", m(RegistryLog, *whatif.APPEND)),
        ("      Session.flush (autoflush + explicit)", SASession.flush),
        ("  canonical_json (rfc8785, all calls)", canonical_json),
        ("  SigningKey.key_id (derives public key)", _getter(SigningKey, "key_id")),
        ("  SQLAlchemy connection checkout", "sqlalchemy/pool/base.py:_checkout"),
        ("  sqlite3/psycopg execute (driver)", "~:<method 'execute' of"),
    ]


def _getter(cls: type, name: str) -> Any:
    """The function behind a property or a cached_property (they keep it in different
    attributes: ``fget`` and ``func``)."""
    attr = cls.__dict__[name]
    return getattr(attr, "fget", None) or attr.func


def verify_breakdown() -> list[tuple[str, Any]]:
    m, verifier = whatif.method, getattr(verify, "_Verifier", None)
    return [
        ("verify_log (total)", verify.verify_log),
        ("  _Verifier.__init__ (load all rows)", m(verifier, "__init__")),
        ("  check_entries (iterate LogEntry rows)", m(verifier, "check_entries")),
        ("    check_leaf", m(verifier, "check_leaf")),
        ("      parse_canonical (json.loads + re-canonicalise)", parse_canonical),
        ("        canonical_json (rfc8785)", canonical_json),
        ("      Envelope.from_json (base64)", _code(Envelope.from_json)),
        ("      Envelope.statement (parse_canonical again)", _getter(Envelope, "statement")),
        ("      check_record", m(verifier, "check_record")),
        ("        Envelope.verify", Envelope.verify),
        ("          Ed25519 verify (cryptography)", "~:<method 'verify' of"),
        ("          key_id_of", key_id_of),
        ("        compare_row -> statement_of", statement_of),
        ("  merkle.leaf_hash", merkle.leaf_hash),
        ("  check_checkpoints (prefix roots)", m(verifier, "check_checkpoints")),
    ]


def _spec(label: str, target: Any) -> tuple[str, str, str]:
    if isinstance(target, str):
        suffix, name = target.split(":", 1)
        return label, suffix, name
    code = target.__code__
    return label, f"{code.co_filename}@{code.co_firstlineno}", code.co_name


def breakdown(profiler: Any, per: int, spec: list[tuple[str, Any]]) -> list[list[object]]:
    """Cumulative time per call of each function of ``spec`` under ``profiler``."""
    wanted = [_spec(label, target) for label, target in spec
              if target is not None and (isinstance(target, str) or hasattr(target, "__code__"))]
    # cumulative_breakdown matches by file suffix + name; pin code objects to their line too
    exact = [(lbl, suf.split("@")[0], name) for lbl, suf, name in wanted]
    lines = {lbl: int(suf.split("@")[1]) for lbl, suf, _ in wanted if "@" in suf}
    _total, rows = cumulative_breakdown(profiler, per, exact, lines)
    return rows
