"""What ``consentry demo`` recorded, and its report: the steps' lines, JSON, summary.

:mod:`consentry.cli.demo_cmds` runs the steps and fills a :class:`DemoRecord`
(through its subclass that also holds the registry, engine and gateway); this module
only reads it back.

Invariants
- Reporting never changes the record and never touches the registry or the files it
  names: :meth:`DemoRecord.to_json` and :meth:`DemoRecord.summary` are pure reads
  (apart from the elapsed time).
- ``ok`` holds only when all :data:`STEPS` steps ran and each did what it should;
  :meth:`DemoRecord.failed` is the first step that did not.
- Subject and grantee ids in the summary are followed by their names
  (:meth:`DemoRecord.human`); the JSON keeps ids only.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consentry.gate import Receipt

__all__ = [
    "AUDIT_HTML",
    "AUDIT_JSON",
    "COMPARISON_NAME",
    "OUTPUT_NAME",
    "STEPS",
    "TRUTH_PHOTO",
    "DemoRecord",
    "Job",
    "Step",
]

STEPS = 12
TRUTH_PHOTO = "obama2.jpg"  # held out: degraded to make the input, never enrolled
OUTPUT_NAME = "restored-allowed.png"
AUDIT_JSON = "audit-report.json"
AUDIT_HTML = "audit-report.html"
COMPARISON_NAME = "comparison.png"  # six panels with identity scores, unsigned


@dataclass
class Step:
    number: int
    name: str
    ok: bool
    seconds: float
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.number,
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class Job:
    """One gateway job of the demo and what came of it."""

    label: str
    grantee: str
    receipt: Receipt
    main_reason: str
    written: str | None = None

    @property
    def outcome(self) -> str:
        return "allowed" if self.receipt.allowed else "refused"

    def to_json(self) -> dict[str, object]:
        return {
            "job": self.label,
            "grantee": self.grantee,
            "outcome": self.outcome,
            "allowed": self.receipt.allowed,
            "decision": self.receipt.decision_id,
            "log_index": self.receipt.log_index,
            "main_reason": self.main_reason,
            "reasons": list(self.receipt.reasons),
            "outputs_released": len(self.receipt.outputs),
            "written": self.written,
        } | ({"details": self.receipt.details} if self.receipt.details else {})


@dataclass
class DemoRecord:
    """What the demo did, step by step, and how it is reported (stderr lines are the
    runner's; :meth:`to_json` and :meth:`summary` are the final report)."""

    home: Path
    data: Path
    as_json: bool
    started: float = field(default_factory=time.perf_counter)
    steps: list[Step] = field(default_factory=list)
    subjects: dict[str, str] = field(default_factory=dict)  # display name -> id
    grantees: dict[str, str] = field(default_factory=dict)  # name -> id
    prior_id: str = ""
    prior_sha256: str = ""
    grant_id: str = ""
    grant_index: int | None = None
    revocation_id: str = ""
    revocation_index: int | None = None
    jobs: list[Job] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    restoration: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, object] = field(default_factory=dict)
    audit: dict[str, object] = field(default_factory=dict)
    log: dict[str, object] = field(default_factory=dict)
    identity: dict[str, object] = field(default_factory=dict)

    # ------------------------------------------------------------------ paths and names
    @property
    def demo_dir(self) -> Path:
        return self.home / "demo"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.home))

    def human(self, text: str) -> str:
        """``text`` with the demo's subject and grantee ids followed by their names."""
        for name, record_id in [*self.subjects.items(), *self.grantees.items()]:
            text = text.replace(record_id, f"{record_id} [{name}]")
        return text

    # ------------------------------------------------------------------ report
    @property
    def ok(self) -> bool:
        return len(self.steps) == STEPS and all(step.ok for step in self.steps)

    def failed(self) -> Step | None:
        return next((step for step in self.steps if not step.ok), None)

    def inspect_commands(self) -> list[str]:
        home = shlex.quote(str(self.home))
        out = shlex.quote(self.files.get("restored", str(self.demo_dir / OUTPUT_NAME)))
        return [
            f"consentry log verify --home {home}",
            f"consentry verify {out} --home {home}",
            f"consentry audit {shlex.quote(str(self.demo_dir))} --home {home}",
            f"consentry grants --home {home}",
        ]

    def to_json(self) -> dict[str, object]:
        failed = self.failed()
        return {
            "ok": self.ok,
            "failed_step": failed.to_json() if failed else None,
            "home": str(self.home),
            "seconds": round(time.perf_counter() - self.started, 3),
            "outcomes": [job.outcome for job in self.jobs],
            "steps": [step.to_json() for step in self.steps],
            "subjects": self.subjects,
            "grantees": self.grantees,
            "prior": {"id": self.prior_id, "sha256": self.prior_sha256},
            "grant": {"id": self.grant_id, "log_index": self.grant_index},
            "revocation": {"id": self.revocation_id, "log_index": self.revocation_index},
            "jobs": [job.to_json() for job in self.jobs],
            "verify": self.verify,
            "audit": self.audit,
            "log": self.log,
            "identity": self.identity,
            "files": self.files,
            "inspect": self.inspect_commands(),
        }

    def _identity_lines(self) -> list[str]:
        """The identity table: each panel's SFace and dlib cosine to the held-out truth."""
        ident = self.identity
        panels = ident.get("panels")
        lines = [
            f"Identity (cosine to the held-out truth {TRUTH_PHOTO}, every panel aligned at the "
            "same face geometry; SFace: two clean photos of one person average about 0.70;",
            "dlib cosines sit high for any face, read their order), "
            f"see {COMPARISON_NAME}:",
        ]
        if isinstance(panels, dict):
            for found in panels.values():
                if "sface" in found:
                    scores = f"SFace {found['sface']:.3f}   dlib {found['dlib']:.3f}"
                else:
                    scores = str(found.get("note", "not scored"))
                lines.append(f"  {found['label']:<22} {scores}")
        seams = ident.get("seams")
        if isinstance(seams, dict) and "restored" in seams:
            lines.append(
                f"  seams: detail gradient energy on the face outline / inside the face "
                f"{seams['restored']:.3f} (a hard paste is about 0.5)"
            )
        lines.append(
            f"  (the input face is {ident['input_face_px']} px wide, restored at "
            f"x{ident['scale']}: too small for a method that does not know who it is; "
            f"the enrolled photo itself scores SFace {ident['enrolled_photo']:.3f})"
        )
        return lines

    def summary(self) -> str:
        seconds = time.perf_counter() - self.started
        failed = self.failed()
        if failed is None:
            headline = (
                f"Consentry demo: every step did what it should ({STEPS} steps, {seconds:.1f} s)."
            )
        else:
            headline = (
                f"Consentry demo FAILED at step {failed.number} ({failed.name}) after "
                f"{seconds:.1f} s: {failed.detail}"
            )
        lines = [
            headline,
            "",
            "What happened (each decision is a signed entry of the transparency log):",
        ]
        for job in self.jobs:
            lines.append(
                f"  {job.outcome.upper():<8} log index {job.receipt.log_index}  "
                f"{job.grantee} ({job.label}): {self.human(job.main_reason)}"
            )
        if self.verify.get("ok"):
            lines += [
                f"  The output released at log index {self.jobs[0].receipt.log_index} still "
                f"verifies after the revocation at log index {self.revocation_index}:",
                "  consent is judged at the time of the decision. The grant was valid when the "
                "output was released;",
                "  the revocation stops every later job (the retry was refused) but does not "
                "unmake a lawful release.",
            ]
        if self.audit:
            lines.append(
                f"  Audit of demo/: {self.audit['files']} files, {self.audit['findings']} "
                "finding(s): registered faces without valid provenance (the unsigned input and "
                "comparison); the signed output has none."
            )
        if self.log.get("ok"):
            lines.append(f"  Log: {self.log['size']} entries, verified.")
        if "restored" in self.identity:
            lines += ["", *self._identity_lines()]
        lines += ["", f"Files (home {self.home}):"]
        labels = {
            "input": "degraded input (unsigned)",
            "restored": "restored output (signed, C2PA)",
            "bicubic_comparison": "bicubic comparison (unsigned)",
            "comparison": "comparison picture, six panels",
            "audit_html": "audit report (HTML)",
            "audit_json": "audit report (JSON)",
        }
        for key, label in labels.items():
            if key in self.files:
                lines.append(f"  {label:<32} {self.files[key]}")
        lines += ["", "Inspect:"] + [f"  {command}" for command in self.inspect_commands()]
        return "\n".join(lines)
