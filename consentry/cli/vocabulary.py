"""One JSON vocabulary for the command line's answers.

The names the CLI settles on, for every command that prints them:

- ``decision_id``, ``grant_ids``, ``subject_ids``: the ids a decision is about
  (``verify`` always said so; ``check``, ``generate`` and ``restore`` also print their
  older ``decision``, ``grants`` and ``subjects``, with the same values, for one
  release: they will then be dropped).
- ``manifest_state``: the state of a file's C2PA manifest (``none``, ``trusted``,
  ``valid_untrusted``, ``invalid``), as ``audit`` says; ``verify`` also prints its older
  ``c2pa_state`` for one release.
- hashes and roots are lowercase hex (``root_hash``, ``sha256``, ``leaf_hash``); only
  the signed checkpoint note itself keeps base64, which its format (C2SP
  signed-note) prescribes.

Invariant: an added name carries exactly the value of the old one; nothing is renamed
in place, so a script written against the old names keeps working for a release.
"""

from __future__ import annotations

from typing import Any

__all__ = ["receipt_view", "verify_view"]

# old name -> the name the vocabulary settles on
_RECEIPT = {"decision": "decision_id", "grants": "grant_ids", "subjects": "subject_ids"}
_VERIFY = {"c2pa_state": "manifest_state"}


def _with_new_names(value: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return value | {new: value[old] for old, new in names.items() if old in value}


def receipt_view(value: dict[str, Any]) -> dict[str, Any]:
    """A gateway receipt's JSON with the vocabulary's names added."""
    return _with_new_names(value, _RECEIPT)


def verify_view(value: dict[str, Any]) -> dict[str, Any]:
    """A verify result's JSON with the vocabulary's names added."""
    return _with_new_names(value, _VERIFY)
