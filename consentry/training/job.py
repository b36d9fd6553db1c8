"""Training a subject's prior, only under consent: the ``train`` purpose of a grant.

:func:`train_under_grant` is what ``consentry prior train`` runs. It decides,
trains, decides again and registers:

1. The grantee needs an active grant from the subject with purpose ``train``;
   the decision (allow or refuse, with the reason) is logged like every gateway
   decision. A refusal raises :class:`GrantError` after it is logged.
2. The subject's kept enrollment photos are decrypted in memory and passed to
   :func:`consentry.training.loop.train_prior`; they are never written.
3. When training ends the grant is checked again: a revocation (or expiry, or an
   erasure) logged while it ran wins, and the result is *not* registered (the
   refusal is logged; the weights file is deleted).
4. The prior is registered bound to its SHA-256 and to its making: the training
   configuration, the base model folder's hash, the grant, the photos' hashes
   (signed ``details``). Using it later needs a grant that names that SHA-256.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from consentry.errors import ErasedError, GrantError, InputError
from consentry.gate import grant_facts
from consentry.gate.policy import GrantFact, active_grant, grant_problems
from consentry.generation.placement import resolve_placement
from consentry.registry.biometrics import decrypt_photos, opted_out_subjects
from consentry.registry.decisions import record_decision
from consentry.registry.models import Decision, Prior
from consentry.registry.prior_files import store_prior_file
from consentry.registry.statements import format_time
from consentry.registry.store import Registry
from consentry.training.config import TrainConfig
from consentry.training.loop import ProgressCallback, TrainResult, train_prior

__all__ = ["TrainOutcome", "default_work_dir", "train_under_grant"]


@dataclass(frozen=True)
class TrainOutcome:
    """A registered prior, the training result and the two logged decisions."""

    prior: Prior
    result: TrainResult
    start: Decision
    finish: Decision


def default_work_dir(registry: Registry, subject_id: str, config: TrainConfig) -> Path:
    """Where checkpoints go, stable per (subject, configuration) so ``--resume`` finds them."""
    return registry.home.root / "training" / f"{subject_id}-{config.kind}-{config.sha256()[:12]}"


def _covering_grant(
    registry: Registry, subject_id: str, grantee_id: str
) -> tuple[GrantFact | None, list[str]]:
    now = format_time(registry.now())
    grants = grant_facts(registry, {subject_id}, None)
    cover = active_grant(grants, subject_id, grantee_id, "train", now)
    if cover is not None:
        return cover, []
    reasons = [f"no active grant for subject {subject_id} (grantee {grantee_id}, purpose train)"]
    for grant in grants:
        reasons += grant_problems(grant, subject_id, grantee_id, "train", now)
    return None, reasons


def _erased(registry: Registry, subject_id: str) -> bool:
    """From the signed log (``registry.consent``), not the erasure rows."""
    registry.consent.refresh()
    return subject_id in registry.consent.erased


def train_under_grant(
    registry: Registry,
    grantee: str,
    subject: str,
    model_dir: Path,
    config: TrainConfig,
    *,
    work_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    device: str | None = None,
) -> TrainOutcome:
    """Train and register ``subject``'s prior for ``grantee``; see the module docstring."""
    placement = resolve_placement(device, purpose="training")  # a bad device: nothing logged
    grantee_id = registry.get_grantee(grantee).id
    subject_id = registry.get_subject(subject).id
    cover, reasons = _covering_grant(registry, subject_id, grantee_id)
    if _erased(registry, subject_id):
        cover, reasons = None, [f"subject {subject_id} was erased"]
    if opted_out_subjects(registry, [subject_id]):
        cover, reasons = None, [f"subject {subject_id} opted out: no grant covers them"]
    if cover is None:
        record_decision(
            registry, grantee_id, "train", False, reasons, [], [subject_id], None, [], []
        )
        registry.checkpoint()
        raise GrantError("; ".join(reasons))
    kept = decrypt_photos(registry, subject_id)
    if not kept:
        raise InputError(
            f"subject {subject_id} has no kept photos to train on: enroll with --keep-photos"
        )
    photo_hashes = sorted({sha for sha, _ in kept})
    photos = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in kept]
    start = record_decision(
        registry,
        grantee_id,
        "train",
        True,
        [f"grant {cover.id} covers subject {subject_id} (grantee {grantee_id}, purpose train)"],
        [cover.id],
        [subject_id],
        None,
        photo_hashes,
        [],
    )
    registry.checkpoint()
    if not start.allowed:  # revoked or erased since the grant was read (re-checked at record)
        raise GrantError("; ".join(start.reasons))
    folder = work_dir or default_work_dir(registry, subject_id, config)
    result = train_prior(
        model_dir, photos, config, folder, resume=resume, progress=progress, device=placement
    )

    after, late = _covering_grant(registry, subject_id, grantee_id)
    if _erased(registry, subject_id):
        after, late = None, [f"subject {subject_id} was erased while training"]
    if opted_out_subjects(registry, [subject_id]):
        after, late = None, [f"subject {subject_id} opted out while training"]
    if after is None:
        result.path.unlink(missing_ok=True)
        record_decision(
            registry,
            grantee_id,
            "train",
            False,
            [*late, "consent ended while training: the prior is not registered"],
            [],
            [subject_id],
            None,
            photo_hashes,
            [result.sha256],
        )
        registry.checkpoint()
        kind = ErasedError if "erased" in " ".join(late) else GrantError
        raise kind("; ".join(late) + ": the trained prior was discarded")
    finish = record_decision(
        registry,
        grantee_id,
        "train",
        True,
        [f"grant {after.id} still covers subject {subject_id} at the end of training"],
        [after.id],
        [subject_id],
        None,
        photo_hashes,
        [result.sha256],
    )
    if not finish.allowed:  # revoked or erased since the check above (re-checked at record)
        result.path.unlink(missing_ok=True)
        registry.checkpoint()
        raise GrantError("; ".join(finish.reasons) + ": the trained prior was discarded")
    prior = registry.add_prior(
        subject_id,
        config.kind,
        model_dir.name,
        result.path,
        details={
            "training": config.to_dict(),
            "base_model_sha256": result.base_model_sha256,
            "grant": after.id,
            "decision": finish.id,
            "photos": photo_hashes,
            "steps": result.steps,
            "final_loss": round(float(result.final_loss), 6),
            "device": result.device,
        },
    )
    store_prior_file(registry, prior, result.path)
    registry.checkpoint()
    return TrainOutcome(prior, result, start, finish)
