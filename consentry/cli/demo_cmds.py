"""``consentry demo``: the whole consent flow, end to end, on the photos shipped in the package.

In a fresh registry (a new temporary folder, or an empty ``--home``), through the same
library calls the other commands use, with nothing mocked:

 1. initialise a registry (operator key, SQLite database, first checkpoint, dev PKI);
 2. enroll Barack Obama, Joe Biden and Eileen Collins from ``consentry/data/faces``;
 3. register Obama's kept photo as an exemplars prior;
 4. register the grantee "Demo Studio" and grant it ``restore`` naming that prior;
 5. degrade a second, held-out photo of Obama (``obama2.jpg``: x20 smaller, blur, noise,
    JPEG q60) until its face is about 14 px, too small for a generic method to know who it
    is, while the gateway still recognises him (below about 13 px it refuses: fail closed);
 6. restore it as Demo Studio: allowed, signed, logged (plus an unsigned bicubic comparison);
 7. the same job as "Uninvited App", which holds no grant: refused, nothing released;
 8. revoke the grant and retry as Demo Studio: refused;
 9. verify the released output: it still verifies (consent is judged at its decision);
10. audit the demo folder: the unsigned input is a finding, the signed output is not;
11. checkpoint the log and verify all of it;
12. compare: ``comparison.png`` shows the input, bicubic, Real-ESRGAN, the same method
    with another person's (Biden's shipped) photo, the signed restoration and the truth,
    each with its SFace and dlib cosine to the held-out truth
    (:mod:`consentry.cli.demo_comparison`; the panels other than the signed output are
    unsigned comparisons made in memory, like the bicubic one, never released).

Invariants
- The demo never touches an existing registry: ``--home`` must be a new or empty
  folder (else exit 2 before anything is written); without it a new temporary folder
  is made and kept for inspection. ``CONSENTRY_HOME`` and ``CONSENTRY_DB`` are ignored:
  the database is always the SQLite file inside the demo's home.
- Exit 0 only when every step did what it should; at the first step that does not,
  the demo stops and exits 1 naming that step. Step 12 is informational: it is
  skipped, not failed, when the faces cannot be measured.
- Progress goes to stderr, one line per step with its time; the summary (or, with
  ``--json``, one JSON object) goes to stdout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consentry.cli.common import JsonOpt, emit_json
from consentry.cli.demo_report import (
    AUDIT_HTML,
    AUDIT_JSON,
    COMPARISON_NAME,
    OUTPUT_NAME,
    STEPS,
    TRUTH_PHOTO,
    DemoRecord,
    Job,
    Step,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from consentry.faces.engine import FaceEngine
    from consentry.gate import Gateway, Receipt
    from consentry.registry.store import Registry

__all__ = ["demo_command", "register"]

STUDIO = "Demo Studio"
UNINVITED = "Uninvited App"
SUBJECTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Barack Obama", ("Obama",), "obama.jpg"),
    ("Joe Biden", ("Biden",), "biden.jpg"),
    ("Eileen Collins", (), "astronaut.jpg"),
)
# obama2.jpg's 280 px face to 14 px: below what a generic method can name. Measured on
# this photo, SFace: own photos beat bicubic and Real-ESRGAN at x20, not at x18, 19, 21.
DOWNSCALE = 20
BLUR_SIGMA = 0.25 * DOWNSCALE  # the gateway's forward model at x8 (sigma 2 there)
NOISE_SIGMA = 5.0
JPEG_QUALITY = 60
OTHER_NAME = "Joe Biden"
OTHER_PHOTO = "biden.jpg"

INPUT_NAME = "input-degraded.jpg"
BICUBIC_NAME = "comparison-bicubic-unsigned.png"

DemoHomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="A new or empty folder for the demo's registry (default: a new temporary "
        "folder). CONSENTRY_HOME is not read: the demo never touches an existing registry.",
        show_default=False,
    ),
]


class _StepError(Exception):
    """A step ran but did not do what it should; the message says what it did instead."""


@dataclass
class _Demo(DemoRecord):
    """The demo's state, filled in step by step: the record, and what runs the steps."""

    registry: Registry | None = None
    engine: FaceEngine | None = None
    gateway: Gateway | None = None

    # ------------------------------------------------------------------ plumbing
    def reg(self) -> Registry:
        assert self.registry is not None
        return self.registry

    def eng(self) -> FaceEngine:
        assert self.engine is not None
        return self.engine

    def run(self, name: str, action: Callable[[], str]) -> bool:
        """Run one step, time it, print its line; False when it did not do what it should."""
        from consentry.errors import ConsentryError

        number = len(self.steps) + 1
        start = time.perf_counter()
        try:
            detail, ok = action(), True
        except _StepError as exc:
            detail, ok = str(exc), False
        except ConsentryError as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        except Exception as exc:  # a demo names the failing step rather than a traceback
            detail, ok = f"unexpected {type(exc).__name__}: {exc}", False
        step = Step(number, name, ok, time.perf_counter() - start, detail)
        self.steps.append(step)
        mark = "ok  " if ok else "FAIL"
        typer.echo(
            f"[{number:>2}/{STEPS}] {mark} {name:<26} {step.seconds:6.2f} s  {detail}", err=True
        )
        return ok

    # ------------------------------------------------------------------ steps
    def init_registry(self) -> str:
        from consentry.config import Home
        from consentry.provenance.certs import create_dev_pki
        from consentry.registry.store import Registry

        # the home's own SQLite file, explicitly: CONSENTRY_DB must not lead elsewhere
        self.registry = Registry.init(self.home, Home(self.home).default_db_url)
        pki = create_dev_pki(self.registry.home.root)
        return (
            f"registry at {self.home} (SQLite), operator key {self.registry.key_id[:16]}, "
            f"dev PKI root {self.relative(pki.root_cert)}"
        )

    def enroll(self) -> str:
        from consentry.faces.engines import get_engine
        from consentry.identity.enroll import enroll_photos

        self.engine = get_engine("sface")
        registry = self.reg()
        for name, aliases, photo in SUBJECTS:
            subject = registry.add_subject(name, aliases)
            enroll_photos(registry, self.engine, subject.id, [self.data / photo], keep_photos=True)
            self.subjects[name] = subject.id
        enrolled = ", ".join(f"{name} ({photo})" for name, _, photo in SUBJECTS)
        return f"{len(SUBJECTS)} subjects enrolled with the sface engine, photos kept: {enrolled}"

    def register_prior(self) -> str:
        from consentry.generation.exemplars import register_exemplars

        registry = self.reg()
        obama = self.subjects["Barack Obama"]
        prior = register_exemplars(registry, obama)
        self.prior_id, self.prior_sha256 = prior.id, prior.sha256
        return f"exemplars prior {prior.id} of Barack Obama, SHA-256 {prior.sha256[:16]}..."

    def grant(self) -> str:
        registry = self.reg()
        grantee, _api_key = registry.add_grantee(STUDIO)
        self.grantees[STUDIO] = grantee.id
        row = registry.grant(
            self.subjects["Barack Obama"], grantee.id, ["restore"], priors=[self.prior_sha256]
        )
        self.grant_id, self.grant_index = row.id, row.log_index
        return (
            f"grantee {STUDIO!r} ({grantee.id}); grant {row.id} at log index {row.log_index}: "
            "Barack Obama -> Demo Studio, purpose restore, naming the prior"
        )

    def degrade(self) -> str:
        from PIL import Image

        from consentry.faces.images import load_image
        from consentry.generation.restoration.degrade import Degradation

        truth = _cut(load_image(self.data / TRUTH_PHOTO).pixels)
        height, width = truth.shape[:2]
        # blur, area downscale, noise; the JPEG is the file's own (quality JPEG_QUALITY)
        model = Degradation(DOWNSCALE, BLUR_SIGMA, NOISE_SIGMA, None, seed=0)
        small = Image.fromarray(model.apply(truth))
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        target = self.demo_dir / INPUT_NAME
        small.save(target, format="JPEG", quality=JPEG_QUALITY)
        self.files["input"] = str(target)
        return (
            f"{TRUTH_PHOTO} ({width} x {height}, held out) -> {small.width} x {small.height} "
            f"(x{DOWNSCALE} smaller, blur sigma {BLUR_SIGMA:g}, noise sigma {NOISE_SIGMA:g}), "
            f"JPEG q{JPEG_QUALITY}: {self.relative(target)}"
        )

    def _restore(self, grantee: str) -> Receipt:
        from consentry.gate import Gateway, RunRequest

        if self.gateway is None:
            self.gateway = Gateway(self.reg(), self.eng())
        request = RunRequest(
            grantee, "restore", "", Path(), image=Path(self.files["input"]), prior=self.prior_id
        )
        return self.gateway.run(request)

    def allowed_restore(self) -> str:
        receipt = self._restore(STUDIO)
        job = Job("allowed", STUDIO, receipt, _main_reason(receipt.reasons, "covers subject"))
        self.jobs.append(job)
        if not receipt.allowed or len(receipt.outputs) != 1:
            raise _StepError(
                f"expected ALLOWED with one signed output, got allowed={receipt.allowed} with "
                f"{len(receipt.outputs)} output(s): {'; '.join(receipt.reasons)}"
            )
        target = self.demo_dir / OUTPUT_NAME
        target.write_bytes(receipt.outputs[0])
        job.written = self.files["restored"] = str(target)
        restoration = receipt.details.get("restoration")
        self.restoration = dict(restoration) if isinstance(restoration, dict) else {}
        comparison = self._bicubic_comparison()
        return (
            f"ALLOWED as {STUDIO}, decision {receipt.decision_id} at log index "
            f"{receipt.log_index}; signed {self.relative(target)}" + comparison
        )

    def _bicubic_comparison(self) -> str:
        """The same crop of the input at the same scale, by bicubic: unsigned, for comparison."""
        from PIL import Image

        from consentry.faces.images import load_image
        from consentry.generation.restoration.generic import bicubic_upscale

        crop, scale = self.restoration.get("crop"), self.restoration.get("scale")
        if not (isinstance(crop, list) and len(crop) == 4 and isinstance(scale, int)):
            return "; no restoration details, so no bicubic comparison"
        x, y, w, h = (int(v) for v in crop)
        low = load_image(Path(self.files["input"])).pixels
        upscaled = bicubic_upscale(low[y : y + h, x : x + w].copy(), scale)
        target = self.demo_dir / BICUBIC_NAME
        Image.fromarray(upscaled).save(target, format="PNG")
        self.files["bicubic_comparison"] = str(target)
        return f" (x{scale} of a {w} x {h} crop); unsigned bicubic comparison {target.name}"

    def refused_without_grant(self) -> str:
        registry = self.reg()
        grantee, _api_key = registry.add_grantee(UNINVITED)
        self.grantees[UNINVITED] = grantee.id
        receipt = self._restore(UNINVITED)
        job = Job("no grant", UNINVITED, receipt, _main_reason(receipt.reasons, "no active grant"))
        self.jobs.append(job)
        if receipt.allowed or receipt.outputs or receipt.log_index is None:
            raise _StepError(
                f"expected a logged refusal with nothing released, got allowed={receipt.allowed}, "
                f"{len(receipt.outputs)} output(s), log index {receipt.log_index}"
            )
        return f"REFUSED as {UNINVITED} (log index {receipt.log_index}), nothing written: " + (
            self.human(job.main_reason)
        )

    def refused_after_revocation(self) -> str:
        revocation = self.reg().revoke(self.grant_id, "demo: the subject withdrew consent")
        self.revocation_id, self.revocation_index = revocation.id, revocation.log_index
        receipt = self._restore(STUDIO)
        job = Job("after revocation", STUDIO, receipt, _main_reason(receipt.reasons, "revoked"))
        self.jobs.append(job)
        if receipt.allowed or receipt.outputs or receipt.log_index is None:
            raise _StepError(
                f"expected a logged refusal after revocation, got allowed={receipt.allowed}, "
                f"{len(receipt.outputs)} output(s), log index {receipt.log_index}"
            )
        if not any("revoked" in reason for reason in receipt.reasons):
            raise _StepError(f"refused, but not for the revocation: {'; '.join(receipt.reasons)}")
        return (
            f"revoked {self.grant_id} (log index {revocation.log_index}); REFUSED as {STUDIO} "
            f"(log index {receipt.log_index}): {self.human(job.main_reason)}"
        )

    def verify_output(self) -> str:
        from consentry.provenance.verify import verify_media

        data = Path(self.files["restored"]).read_bytes()
        result = verify_media(self.reg(), data, "image/png")
        self.verify = result.to_json()
        allowed = self.jobs[0].receipt
        if not result.ok:
            raise _StepError(
                f"{OUTPUT_NAME} does not verify: C2PA {result.c2pa_state}, {result.consent_reason}"
            )
        if result.decision_id != allowed.decision_id or result.log_index != allowed.log_index:
            raise _StepError(
                f"{OUTPUT_NAME} names decision {result.decision_id} at {result.log_index}, not "
                f"{allowed.decision_id} at {allowed.log_index}"
            )
        return (
            f"{OUTPUT_NAME}: C2PA {result.c2pa_state}, consent ok at log index "
            f"{result.log_index} although the grant was revoked at {self.revocation_index}"
        )

    def audit_folder(self) -> str:
        from consentry.provenance.audit import audit_paths, write_reports

        report = audit_paths(self.reg(), self.eng(), [self.demo_dir])
        json_file, html_file = self.demo_dir / AUDIT_JSON, self.demo_dir / AUDIT_HTML
        write_reports(report, json_file, html_file)
        self.files["audit_json"], self.files["audit_html"] = str(json_file), str(html_file)
        by_name = {Path(item.path).name: item for item in report.items}
        self.audit = {
            "files": len(report.items),
            "findings": report.findings,
            "unreadable": report.unreadable,
            "by_file": {
                name: {
                    "manifest": item.manifest_state,
                    "consent": item.consent,
                    "findings": [
                        {"subject": f.subject_id, "name": f.name, "reason": f.reason}
                        for f in item.findings
                    ],
                }
                for name, item in by_name.items()
            },
        }
        source, output = by_name.get(INPUT_NAME), by_name.get(OUTPUT_NAME)
        obama = self.subjects["Barack Obama"]
        if source is None or not any(f.subject_id == obama for f in source.findings):
            raise _StepError(f"expected a finding of Barack Obama in {INPUT_NAME}, found none")
        if output is None or output.findings or output.consent != "ok":
            raise _StepError(
                f"expected no finding in the signed {OUTPUT_NAME}, got "
                + ("no report item" if output is None else f"{len(output.findings)} finding(s)")
            )
        if report.unreadable:
            raise _StepError(f"{report.unreadable} file(s) could not be read")
        flagged = ", ".join(
            f"{name} ({item.findings[0].name}: {item.findings[0].reason})"
            for name, item in by_name.items()
            if item.findings
        )
        return (
            f"{len(report.items)} files, {report.findings} finding(s): {flagged}; "
            f"{OUTPUT_NAME}: none (trusted, consent ok); reports {AUDIT_JSON}, {AUDIT_HTML}"
        )

    def verify_log(self) -> str:
        registry = self.reg()
        registry.checkpoint()
        report = registry.verify_log()
        self.log = {
            "ok": report.ok,
            "size": report.size,
            "root": report.root.hex(),
            "checkpoints": report.checkpoints,
            "problems": list(report.problems),
        }
        if not report.ok:
            raise _StepError("log verify failed: " + "; ".join(report.problems))
        return (
            f"checkpoint signed; {report.size} entries, {report.checkpoints} checkpoints, "
            f"root {report.root.hex()[:16]}...: every row, leaf and signature verified"
        )

    def measure_identity(self) -> str:
        """Informational: never fails the demo; skipped when it cannot be measured."""
        try:
            from consentry.cli.demo_identity import measure_panels

            self.identity = measure_panels(self)
        except Exception as exc:  # a measurement, not a check: report and move on
            self.identity = {"skipped": f"{type(exc).__name__}: {exc}"}
            return f"skipped: {type(exc).__name__}: {exc}"
        panels = self.identity["panels"]
        assert isinstance(panels, dict)

        def scores(key: str) -> str:
            found = panels[key]
            if "sface" not in found:
                return f"{key} {found.get('note', 'not scored')}"
            return f"{key} {found['sface']:.3f}/{found['dlib']:.3f}"

        shown = ("restored", "bicubic", "realesrgan", "other_person")
        return (
            "cosine to the held-out truth (SFace/dlib): "
            + ", ".join(scores(key) for key in shown)
            + f"; {COMPARISON_NAME}"
        )


def _main_reason(reasons: tuple[str, ...], wanted: str) -> str:
    """The reason that says the most about the outcome: the first containing ``wanted``."""
    return next((r for r in reasons if wanted in r), reasons[0] if reasons else "")


def _cut(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``image`` cut at the bottom and right to multiples of :data:`DOWNSCALE`."""
    import numpy as np

    height, width = image.shape[:2]
    return np.ascontiguousarray(
        image[: height // DOWNSCALE * DOWNSCALE, : width // DOWNSCALE * DOWNSCALE]
    )


def _demo_home(home: Path | None) -> Path:
    """The demo's home: a new temporary folder, or ``home`` if it is new or empty."""
    import tempfile

    from consentry.config import Home
    from consentry.errors import InputError

    if home is None:
        return Path(tempfile.mkdtemp(prefix="consentry-demo-")).resolve()
    root = home.expanduser().resolve()
    if not root.exists():
        return root
    if not root.is_dir():
        raise InputError(f"--home {root} is not a folder: give a new or empty folder")
    if Home(root).exists() or Home(root).operator_key.exists():
        raise InputError(
            f"{root} holds a Consentry registry: the demo never touches an existing "
            "registry; give a new or empty folder, or leave out --home for a temporary one"
        )
    if any(root.iterdir()):
        raise InputError(
            f"{root} is not empty: the demo needs a new or empty folder "
            "(or leave out --home for a temporary one)"
        )
    return root


def _sample_photos() -> Path:
    """The folder of sample photos shipped in the package (``consentry/data/faces``)."""
    from importlib.resources import files

    from consentry.errors import ConfigError

    folder = Path(str(files("consentry.data").joinpath("faces")))
    wanted = [photo for _, _, photo in SUBJECTS] + [TRUTH_PHOTO]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"sample photos missing from {folder}: {', '.join(missing)}")
    return folder


def demo_command(home: DemoHomeOpt = None, as_json: JsonOpt = False) -> None:
    """Run the whole consent flow end to end on the sample photos shipped in the package.

    A fresh registry (a temporary folder, or --home: new or empty only),
    three enrolled subjects, an exemplar prior; a restoration allowed under
    a grant, refused without one, refused after revocation; the released
    output verified, the folder audited, the log verified. Exit 0 if every
    step did what it should, 1 naming the failing step, 2 for a --home that
    is not new and empty.
    """
    demo = _Demo(_demo_home(home), _sample_photos(), as_json)
    typer.echo(f"consentry demo: home {demo.home}", err=True)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("init registry", demo.init_registry),
        ("enroll sample subjects", demo.enroll),
        ("register exemplar prior", demo.register_prior),
        ("grant consent", demo.grant),
        ("make degraded input", demo.degrade),
        ("restore (granted)", demo.allowed_restore),
        ("restore (no grant)", demo.refused_without_grant),
        ("revoke, restore again", demo.refused_after_revocation),
        ("verify released output", demo.verify_output),
        ("audit demo folder", demo.audit_folder),
        ("checkpoint, verify log", demo.verify_log),
        ("measure identity", demo.measure_identity),
    ]
    assert len(steps) == STEPS
    try:
        for name, action in steps:
            if not demo.run(name, action):
                break
    finally:
        if demo.registry is not None:
            demo.registry.close()
    if as_json:
        emit_json(demo.to_json())
    else:
        typer.echo(demo.summary())
    failed = demo.failed()
    if failed is not None:
        typer.echo(f"error: step {failed.number} ({failed.name}) failed: {failed.detail}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``demo`` to the root app."""
    app.command("demo")(demo_command)
