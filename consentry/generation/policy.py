"""TEMPORARY: the old import path of the policy, for ``consentry/generation/service.py``
only, until it moves to ``consentry/server/`` with its imports updated. Delete then.
The policy is :mod:`consentry.gate.policy`."""

from consentry.gate.policy import REGISTERED_PERSON, redact_reasons

__all__ = ["REGISTERED_PERSON", "redact_reasons"]
