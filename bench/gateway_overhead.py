"""Where a gateway job's time goes, for ``python -m bench gateway`` (table 3).

:class:`Stopwatch` and :func:`instrumented` time the gateway's own steps on live
objects (nothing on disk changes; the originals are put back); :func:`overhead` runs
``generate`` and ``restore`` jobs through the real gateway with a timed stand-in
pipeline and reports every stage against the pipeline call; :func:`sd15_estimate`
puts the measured overhead beside stated SD 1.5 pipeline times.

Invariants: the stand-in backend's outputs are real face crops of a granted subject
(so the post-check does real work), and every job is allowed and signed as in
production; the SD 1.5 references are ASSUMPTIONS, never measured here.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from PIL import Image

from bench._common import note
from bench.gateway_data import PROMPT_TEMPLATE, FacePhoto, World, face_square
from bench.gateway_report import SD15_STEPS
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, Receipt, RunRequest, run_job
from consentry.gate import gateway as gateway_module
from consentry.gate import release as release_module
from consentry.generation.backends.base import PriorRef
from consentry.registry.store import Registry

if TYPE_CHECKING:
    from bench.gateway import Sizes

__all__ = ["SD15_REFERENCES", "Stopwatch", "instrumented", "overhead", "sd15_estimate"]

# Stated SD 1.5 pipeline times (512x512): ASSUMPTIONS for table 3, not measured by this
# benchmark. Each is (label, seconds, steps it was measured at, source); a time quoted at
# another step count is scaled linearly to SD15_STEPS. Linear scaling understates a 25-step
# run (the text encoder, VAE decode and image conversion do not shrink with the steps: on
# the H200 below 25 steps took 65% of 50 steps), so the overhead ratios derived from a
# scaled time are slightly overstated.
SD15_REFERENCES: tuple[tuple[str, float, int, str], ...] = (
    ("GPU: H200, diffusers fp16 (torch 2.11, SDPA)", 0.884, 25,
     "measured once for this benchmark on an NVIDIA H200 (this project's device machine, "
     "2026-11-27): StableDiffusionPipeline,\n    diffusers 0.42.1, the SD 1.5 architecture "
     "(UNet 859.5M, VAE 83.7M, CLIP text 123.1M parameters) with RANDOM weights (same "
     "compute),\n    PNDM, guidance 7.5, 512x512, PIL output, text encoder on 77 random ids; "
     "median of 5 after 2 warm-ups (min 0.74 s); 50 steps 1.36 s; fp32 25 steps 1.14 s;\n    "
     "reproduce with python -m bench.sd15_timing (a second run: bench/sd15_reference.json, "
     "best of 3 0.74 s)"),
    ("CPU: 16 cores of the same machine, diffusers fp32", 58.1, 25,
     "bench/sd15_reference.json (python -m bench.sd15_timing --device cpu): 2.19 s per step "
     "x 25 + 3.30 s VAE decode, 4 steps timed"),
    ("GPU: A100 80GB SXM, diffusers fp16 (torch 2.1, SDPA)", 1.591, 50,
     "fal-ai/stable-diffusion-benchmarks README, 'SD1.5 (End-to-end)': mean 1.591 s, "
     "50 steps, 512x512"),
    ("CPU: Xeon Sapphire Rapids, 64 vCPU, diffusers fp32", 32.3, 20,
     "huggingface.co/blog/stable-diffusion-inference-intel (2023-03-28): 32.3 s/image, "
     "20 steps, default fp32 pipeline (45 s on Ice Lake)"),
)


# ------------------------------------------------------------------ stopwatch
ANY = "*"  # Stopwatch.total: calls made in any context


class Stopwatch:
    """Wrap callables on live objects (instance or module attributes) to time each call;
    :meth:`restore` puts the originals back. Nothing on disk changes.

    A wrapper made with ``context`` names the stage its call is: every timed call records
    the outermost such stage it ran inside (``None`` when none), so that, say, the face
    analysis of the outputs (outside the pre-check) is told from that of the inputs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, str | None]] = []  # (label, seconds, context)
        self.context: str | None = None
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: object, attr: str, label: str, context: str | None = None) -> None:
        original = getattr(owner, attr)
        own = isinstance(owner, ModuleType) or attr in vars(owner)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            outer = self.context
            if context is not None and outer is None:
                self.context = context
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.events.append((label, time.perf_counter() - began, outer))
                self.context = outer

        setattr(owner, attr, timed_call)
        if own:
            self._undo.append(lambda: setattr(owner, attr, original))
        else:
            self._undo.append(lambda: delattr(owner, attr))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def clear(self) -> None:
        self.events.clear()

    def total(self, label: str, context: str | None = ANY) -> float:
        """Seconds in calls of ``label`` made inside ``context`` (None: outside any stage)."""
        return sum(s for name, s, ctx in self.events
                   if name == label and (context == ANY or ctx == context))

    def count(self, label: str) -> int:
        return sum(1 for name, _s, _c in self.events if name == label)


@contextmanager
def instrumented(gateway: Gateway, stopwatch: Stopwatch) -> Iterator[Stopwatch]:
    """Time the parts of ``Gateway.check`` / ``Gateway.run`` on these live objects."""
    w = stopwatch.wrap
    w(gateway, "_pre", "pre-check", context="pre")
    w(gateway, "_record", "record", context="record")
    w(release_module, "sign_outputs", "sign", context="sign")
    w(gateway, "_faces", "faces")
    w(gateway, "_grants", "grants")
    w(gateway, "_prompt_subjects", "prompt aliases")
    w(gateway.index, "refresh", "index.refresh")
    w(gateway.index, "_save_cache", "index cache save")
    w(gateway.index, "search", "index.search")
    w(gateway.engine, "detect", "engine.detect")
    w(gateway.engine, "embed", "engine.embed")
    w(gateway.registry, "checkpoint", "checkpoint")
    w(gateway.registry, "get_grantee", "get_grantee")
    w(gateway_module, "load_image", "load_image")  # the inputs (pre-check)
    w(release_module, "load_image", "load_image")  # the outputs (post-check)
    w(gateway_module, "decide", "decide")  # pre-check
    w(release_module, "decide", "decide")  # post-check
    w(gateway_module, "record_decision", "record_decision")
    w(release_module, "png", "png")
    try:
        yield stopwatch
    finally:
        stopwatch.restore()


# ------------------------------------------------------------------ 2. overhead
class TimedBackend:
    """Delegates to a real backend and times each pipeline call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def text2img(self, prompt: str, steps: int, size: int | tuple[int, int], seed: int,
                 prior: PriorRef | None = None) -> list[Image.Image]:
        began = time.perf_counter()
        try:
            return list(self.inner.text2img(prompt, steps, size, seed, prior))
        finally:
            self.seconds.append(time.perf_counter() - began)

    def img2img(self, image: Image.Image, prompt: str, strength: float, steps: int, seed: int,
                prior: PriorRef | None = None) -> list[Image.Image]:
        began = time.perf_counter()
        try:
            return list(self.inner.img2img(image, prompt, strength, steps, seed, prior))
        finally:
            self.seconds.append(time.perf_counter() - began)


class StandInBackend:
    """Returns a fixed 512x512 real face photo at once: stands in for SD 1.5's pipeline so
    that the gateway's work around it (post-check of a 512 px face, PNG, signing) is real."""

    def __init__(self, output: Image.Image) -> None:
        self.output = output

    def text2img(self, prompt: str, steps: int, size: int | tuple[int, int], seed: int,
                 prior: PriorRef | None = None) -> list[Image.Image]:
        return [self.output.copy()]

    def img2img(self, image: Image.Image, prompt: str, strength: float, steps: int, seed: int,
                prior: PriorRef | None = None) -> list[Image.Image]:
        return [self.output.copy()]


def _overhead_job(gateway: Gateway, request: RunRequest, backend: Any, runs: int,
                  pipeline_times: Callable[[], list[float]]) -> dict[str, Any]:
    """Run ``request`` once to warm up and ``runs`` times timed; per-stage medians."""
    stopwatch = Stopwatch()
    per_run: list[dict[str, float]] = []
    receipts: list[Receipt] = []
    with instrumented(gateway, stopwatch):
        for i in range(runs + 1):
            stopwatch.clear()
            before = len(pipeline_times())
            began = time.perf_counter()
            receipt = run_job(gateway, request, backend)
            total = time.perf_counter() - began
            pipes = pipeline_times()[before:]
            pipeline = sum(pipes) if pipes else 0.0
            receipts.append(receipt)
            if i == 0:
                continue  # warm-up
            stages = {
                "pre-check": stopwatch.total("pre-check"),
                "pipeline": pipeline,
                "post png": stopwatch.total("png", None),
                "post load": stopwatch.total("load_image", None),
                "post faces": stopwatch.total("faces", None),
                "post grants": stopwatch.total("grants", None),
                "post decide": stopwatch.total("decide", None),
                "record": stopwatch.total("record"),
                "sign": stopwatch.total("sign"),
            }
            stages["other"] = total - sum(stages.values())
            stages["total"] = total
            stages["overhead"] = total - pipeline
            per_run.append(stages)
    medians = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
    last = receipts[-1]
    return {
        "runs": runs,
        "allowed_all": all(r.allowed for r in receipts),
        "outputs": len(last.outputs),
        "signed_png_bytes": len(last.outputs[0]) if last.outputs else 0,
        "reasons_if_refused": [] if last.allowed else list(last.reasons),
        "median_s": medians,
        "overhead_over_pipeline": (medians["overhead"] / medians["pipeline"]
                                   if medians["pipeline"] > 0 else float("nan")),
    }


def _allowed_probe(gateway: Gateway, grantee: str, world: World) -> FacePhoto:
    """The first granted probe (those matching no look-alike first) that the gate allows
    for restore: nothing is screened, so a look-alike may refuse some (table 1e)."""
    assert world.granted_probe is not None
    for photo in world.granted_probes[:8]:
        if gateway.check(CheckRequest(grantee, "restore", [photo.data])).allowed:
            return photo
    return world.granted_probe


def overhead(world: World, workdir: Path, sizes: Sizes, torch_threads: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from consentry.generation.backends.diffusers_backend import DiffusersBackend
    from consentry.generation.tiny import TINY_IMAGE_SIZE, build_tiny_pipeline

    assert world.granted_probe is not None
    registry = Registry.open(world.home)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, torch_threads))
    try:
        gateway = Gateway(registry, get_engine("sface"))
        began = time.perf_counter()
        model = build_tiny_pipeline(workdir / "tiny-model")
        tiny = TimedBackend(DiffusersBackend(model))
        build_s = time.perf_counter() - began
        grantee = world.grantee_ids["A"]
        chosen = _allowed_probe(gateway, grantee, world)
        probe = chosen.data
        generate_prompt = PROMPT_TEMPLATE.format(name=world.granted_filler_name)
        face_prompt = PROMPT_TEMPLATE.format(name=chosen.identity)
        stand_in = StandInBackend(face_square(chosen, 512))
        jobs: list[tuple[str, RunRequest, Any, Callable[[], list[float]]]] = []
        tiny_times: Callable[[], list[float]] = lambda: tiny.seconds  # noqa: E731
        for purpose, image in (("generate", None), ("restore", probe)):
            jobs.append((
                f"tiny {purpose} {TINY_IMAGE_SIZE}px",
                RunRequest(grantee, purpose, generate_prompt if image is None else "a sharp photo",
                           model, image=image, steps=sizes.steps, size=TINY_IMAGE_SIZE),
                tiny, tiny_times))
        for purpose, image in (("generate", None), ("restore", probe)):
            jobs.append((
                f"stand-in {purpose} 512px",
                RunRequest(grantee, purpose, face_prompt if image is None else "a sharp photo",
                           model, image=image, steps=SD15_STEPS, size=512),
                stand_in, lambda: []))
        size0 = registry.log_size()
        results = {}
        for label, request, backend, times in jobs:
            note(f"  run_job: {label} ({sizes.overhead_runs} timed + 1 warm-up) ...")
            results[label] = _overhead_job(gateway, request, backend, sizes.overhead_runs, times)
        return {"tiny_build_and_load_s": build_s, "jobs": results, "steps": sizes.steps,
                "torch_threads": torch.get_num_threads(),
                "log_size_before": size0, "log_size_after": registry.log_size()}
    finally:
        torch.set_num_threads(threads_before)
        registry.close()


def sd15_estimate(result: dict[str, Any], measured: float | None) -> list[dict[str, Any]]:
    """Overhead at 512 px (stand-in jobs, measured) over stated SD 1.5 pipeline times."""
    jobs = result["jobs"]
    standins = {label.split()[1]: job for label, job in jobs.items()
                if label.startswith("stand-in")}
    references = [(label, seconds * SD15_STEPS / steps, source)
                  for label, seconds, steps, source in SD15_REFERENCES]
    if measured is not None:
        references.append((f"given with --sd15-seconds ({SD15_STEPS} steps)", measured,
                           "command line"))
    rows = []
    for label, seconds, source in references:
        row: dict[str, Any] = {"reference": label, "pipeline_s": seconds, "source": source}
        for purpose, job in standins.items():
            over = job["median_s"]["overhead"]
            row[f"{purpose}_overhead_s"] = over
            row[f"{purpose}_ratio"] = over / seconds
            row[f"{purpose}_share_of_job"] = over / (over + seconds)
        rows.append(row)
    return rows
