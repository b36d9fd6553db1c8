"""TEMPORARY: the old import path of the gateway, for ``consentry/generation/service.py``
only, until it moves to ``consentry/server/`` with its imports updated. Delete then.
The gateway is :mod:`consentry.gate`."""

from consentry.gate.gateway import Gateway, run_job
from consentry.gate.requests import CheckRequest, Receipt, RunRequest

__all__ = ["CheckRequest", "Gateway", "Receipt", "RunRequest", "run_job"]
