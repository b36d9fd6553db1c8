"""The gate: every job passes here, and every decision is logged.

The flow, as the modules read: image -> faces -> identity lookup
(:mod:`consentry.identity.lookup`, the one face pipeline) -> consent facts
(:mod:`facts`) -> policy (:mod:`policy`) -> backend and post-check
(:mod:`release`) -> provenance (signing, :mod:`release`) -> log (the finish step
of :class:`Gateway`).

Invariants (each stated where it is kept)
- Fail closed: any error while gathering facts, deciding or running refuses.
- Every decision, allow or refuse, is one signed log entry and one receipt.
- One refresh of the consent state per job (and one more for a run's post-check).
- Released outputs wait for a checkpoint covering their decision.

Modules, each with one job:

``requests``
    :class:`CheckRequest`, :class:`RunRequest`, :class:`Receipt` (and its
    redaction for a grantee), the job's working state, refusals.
``gateway``
    :class:`Gateway`: ``check(request)``, ``run(request, backend)``, the finish step.
``facts``
    Grant, prior, prompt and face facts from the signed log and the images.
``release``
    Running the backend, the post-check, memorization, signing.
``policy``, ``job_facts``, ``fact_checks``
    The pure decision, its facts and verdict, their well-formedness.
``aliases``, ``skeleton``
    Registered names and aliases found in prompts.
``memorization``
    Near-copies of a prior's photos in outputs.

Importing this package imports none of them; the public names below load their
module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consentry.lazy import lazy_exports

if TYPE_CHECKING:
    from consentry.gate.facts import grant_facts
    from consentry.gate.gateway import Gateway, run_job
    from consentry.gate.policy import Limits, Verdict, decide
    from consentry.gate.requests import (
        INTEGRITY_PREFIX,
        CheckRequest,
        Receipt,
        RunRequest,
        is_integrity_failure,
    )

__all__ = [
    "INTEGRITY_PREFIX",
    "CheckRequest",
    "Gateway",
    "Limits",
    "Receipt",
    "RunRequest",
    "Verdict",
    "decide",
    "grant_facts",
    "is_integrity_failure",
    "run_job",
]

_LAZY: dict[str, str] = {
    "INTEGRITY_PREFIX": "consentry.gate.requests",
    "CheckRequest": "consentry.gate.requests",
    "Gateway": "consentry.gate.gateway",
    "Limits": "consentry.gate.policy",
    "Receipt": "consentry.gate.requests",
    "RunRequest": "consentry.gate.requests",
    "Verdict": "consentry.gate.policy",
    "decide": "consentry.gate.policy",
    "grant_facts": "consentry.gate.facts",
    "is_integrity_failure": "consentry.gate.requests",
    "run_job": "consentry.gate.gateway",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
