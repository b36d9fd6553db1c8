"""Is the registry past its 1:N budget? The gallery size against the calibration's.

A calibration chosen by ``consentry calibrate --fpir`` states ``max_gallery``: the
largest number of registered subjects N at which the expected FPIR (a stranger's
face matched to somebody) stays within its budget. Every enrollment of a new
subject raises N; past ``max_gallery`` the budget no longer holds and the
operator must calibrate again (with more impostor pairs, or a larger budget).

Invariants
- Everything is read from the followed signed log (``registry.consent``): the
  newest signed calibration of the engine and its enrollments and erasures,
  never a database row, so an edited row changes no warning. Nothing here reads
  the database or decrypts anything: it is cheap enough for every health check.
- N counts the subjects with an enrollment of the engine that are not erased
  (an opted-out subject is still searched, so still counted).
- A calibration without a 1:N operating point (FMR mode, undo to one, reset)
  has no budget: ``max_gallery`` None, never over budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from consentry.registry.consent import ConsentState

__all__ = ["GalleryBudget", "gallery_budget", "registered_subjects"]


@dataclass(frozen=True)
class GalleryBudget:
    engine: str
    registered: int  # N: subjects enrolled with the engine, not erased
    max_gallery: int | None  # from the newest signed calibration; None: no 1:N budget
    fpir_target: float | None
    gallery_size: int | None  # the N the calibration was chosen at
    calibration_index: int | None  # log index of that calibration

    @property
    def over(self) -> bool:
        return self.max_gallery is not None and self.registered > self.max_gallery

    def warning(self) -> str | None:
        """One line for an operator when over budget (None when within it)."""
        if not self.over:
            return None
        return (
            f"engine {self.engine}: {self.registered} registered subjects exceed the "
            f"{self.max_gallery} the calibration at log index {self.calibration_index} allows "
            f"for an FPIR of {self.fpir_target:g} (chosen at N={self.gallery_size}): strangers' "
            f"faces will be refused more often than budgeted; run 'consentry calibrate "
            f"FOLDER --fpir {self.fpir_target:g} --apply' with more impostor pairs "
            "(identities and photos)"
        )


def registered_subjects(consent: ConsentState, engine: str | None = None) -> int:
    """Subjects with an enrollment (of ``engine``, or of any) that are not erased."""
    erased = consent.erased
    return len(
        {
            e.subject
            for e in list(consent.enrollments.values())
            if (engine is None or e.engine == engine) and e.subject not in erased
        }
    )


def gallery_budget(consent: ConsentState, engine: str) -> GalleryBudget:
    """N against the newest signed calibration of ``engine`` (the state as followed:
    call ``consent.refresh()`` first for the log as it is now)."""
    newest = None
    for event in reversed(consent.events_since(0)):
        if event.kind == "calibration" and event.engine == engine:
            newest = event
            break
    registered = registered_subjects(consent, engine)
    if newest is None:
        return GalleryBudget(engine, registered, None, None, None, None)
    return GalleryBudget(
        engine,
        registered,
        newest.max_gallery,
        newest.fpir_target,
        newest.gallery_size,
        newest.index,
    )
