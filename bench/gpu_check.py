"""The diffusers paths on a GPU at real size: inference, priors and training.

``python -m bench.gpu_check [--device cuda] [--arch sd15|tiny] [--steps 20] [--out DIR]``

What it runs, through the project's own code (no stand-ins):

1. Builds a Stable Diffusion 1.5 *architecture* folder from configs (UNet
   320/640/1280/1280, cross-attention 768, the 4-channel VAE, a 12-layer CLIP
   text encoder over the tiny pipeline's tokenizer) with random weights, saved in
   the diffusers layout that :func:`load_pipeline` reads. No weights exist offline,
   so pictures are noise, but every tensor has SD 1.5's shape and every step
   SD 1.5's compute.
2. Inference with :class:`DiffusersBackend` on the resolved placement (``auto``:
   float16 on a GPU): text-to-image and img2img at 512x512, 25 steps, timed.
3. Training with :func:`train_prior` on the device: textual inversion, LoRA and
   DreamBooth (both with prior preservation), per-step times and peak memory; the
   LoRA run is also interrupted at a checkpoint and resumed, and compared with the
   uninterrupted run.
4. Each trained prior applied by :class:`DiffusersBackend` (hash-checked) in
   float16: it must load and change the output.
5. A CPU baseline on the same machine: two LoRA steps, for the ratio.

Every section is guarded: a failure is recorded and the next section runs. The
results go to ``OUT/gpu_check.json`` as each section ends, and a table is printed.
``--arch tiny --device cpu`` runs the same script on the tiny pipeline, for a
rehearsal without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

from bench.sd15_timing import sd15_models
from consentry.generation.backends.base import PriorRef
from consentry.generation.backends.diffusers_backend import DiffusersBackend
from consentry.generation.placement import Placement, resolve_placement
from consentry.generation.tiny import (
    assemble_pipeline,
    build_tiny_pipeline,
    make_tiny_tokenizer,
)
from consentry.training import TrainConfig, TrainResult, train_prior

PHOTOS = Path(__file__).resolve().parents[1] / "consentry" / "data" / "faces"
PROMPT = "a photo of a person"


class _StopTrainingError(Exception):
    """Raised from a progress callback to interrupt training at a checkpoint."""


def build_sd15_architecture(folder: Path, device: torch.device) -> Path:
    """Write an SD 1.5-shaped pipeline with random weights (built on ``device``)."""
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet, vae, text = sd15_models(
            len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    assemble_pipeline(unet, vae, text, tokenizer).save_pretrained(folder, safe_serialization=True)
    del unet, vae, text
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return folder


def _sync(placement: Placement) -> None:
    if placement.is_cuda:
        torch.cuda.synchronize(placement.device)


def _peak_gib(placement: Placement) -> float | None:
    if not placement.is_cuda:
        return None
    return round(torch.cuda.max_memory_allocated(placement.device) / 2**30, 2)


def _reset_peak(placement: Placement) -> None:
    if placement.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(placement.device)


def _timed(placement: Placement, call: Callable[[], Any]) -> tuple[Any, float]:
    _sync(placement)
    began = time.perf_counter()
    value = call()
    _sync(placement)
    return value, time.perf_counter() - began


def _image_stats(images: list[Image.Image]) -> dict[str, Any]:
    arrays = [np.asarray(image, dtype=np.float32) for image in images]
    return {
        "size": list(images[0].size),
        "count": len(images),
        "pixel_std": round(float(np.mean([a.std() for a in arrays])), 2),
        "not_constant": all(float(a.std()) > 0.0 for a in arrays),
    }


def _photos(size: int) -> list[Image.Image]:
    out = []
    for name in ("obama.jpg", "obama2.jpg"):
        with Image.open(PHOTOS / name) as image:
            rgb = image.convert("RGB")
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        out.append(rgb.crop((left, top, left + side, top + side)).resize((size, size)))
    return out


def _config(kind: str, steps: int, size: int, class_steps: int) -> TrainConfig:
    learning_rate = {"textual_inversion": 5e-3, "lora": 1e-4, "dreambooth": 5e-6}[kind]
    token = "<sks-person>" if kind == "textual_inversion" else "sks"
    return TrainConfig(
        kind=kind,  # type: ignore[arg-type]
        token=token,
        steps=steps,
        learning_rate=learning_rate,
        resolution=size,
        num_class_images=2,
        class_image_steps=class_steps,
        # only LoRA checkpoints (for the resume check): a DreamBooth checkpoint of
        # SD 1.5 is ~10 GB (UNet and two AdamW moments)
        checkpoint_every=max(1, steps // 2) if kind == "lora" else 0,
    )


def _step_times(stamps: list[float]) -> dict[str, float]:
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    if not gaps:
        return {}
    return {
        "median_step_s": round(statistics.median(gaps), 4),
        "min_step_s": round(min(gaps), 4),
    }


def _train(
    model: Path,
    photos: list[Image.Image],
    config: TrainConfig,
    work: Path,
    placement: Placement,
    *,
    stop_at: int | None = None,
    resume: bool = False,
) -> tuple[TrainResult | None, dict[str, Any]]:
    stamps: list[float] = []

    def progress(step: int, total: int, loss: float) -> None:
        _sync(placement)
        stamps.append(time.perf_counter())
        if stop_at is not None and step == stop_at:
            raise _StopTrainingError

    _reset_peak(placement)
    began = time.perf_counter()
    result: TrainResult | None = None
    with contextlib.suppress(_StopTrainingError):
        result = train_prior(
            model, photos, config, work, resume=resume, progress=progress, device=placement
        )
    record: dict[str, Any] = {
        "wall_s": round(time.perf_counter() - began, 2),
        "steps_run": len(stamps),
        "peak_gpu_gib": _peak_gib(placement),
        **_step_times(stamps),
    }
    if result is not None:
        record.update(
            final_loss=round(result.final_loss, 5),
            train_seconds=round(result.train_seconds, 2),
            device=result.device,
            sha256=result.sha256,
            resumed_from=result.resumed_from,
            file_mib=round(result.path.stat().st_size / 2**20, 1),
        )
    return result, record


def _max_abs_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = load_file(str(a)), load_file(str(b))
    if set(left) != set(right):
        return float("inf")
    return max(float((left[k].float() - right[k].float()).abs().max()) for k in left)


class Check:
    """Runs sections, records each result or failure, writes JSON after each."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: dict[str, Any] = {}
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, run: Callable[[], Any]) -> Any:
        print(f"[gpu_check] {name} ...", flush=True)
        began = time.perf_counter()
        try:
            value = run()
            self.results[name] = {"ok": True, "seconds": 0.0, **(value or {})}
        except Exception as exc:  # recorded; the next section still runs
            traceback.print_exc()
            value = None
            self.results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.results[name]["seconds"] = round(time.perf_counter() - began, 2)
        print(f"[gpu_check] {name}: {json.dumps(self.results[name])[:600]}", flush=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1))
        return value


@dataclass
class _Run:
    """One run of the check: its arguments, placements, model folder and photos, and
    what the sections hand on to later ones (the backend, the trained priors)."""

    args: argparse.Namespace
    infer: Placement
    train: Placement
    size: int
    class_steps: int
    root: Path
    model: Path
    photos: list[Image.Image]
    backend_box: dict[str, DiffusersBackend] = field(default_factory=dict)
    trained: dict[str, TrainResult] = field(default_factory=dict)

    def environment(self) -> dict[str, Any]:
        return {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(),
            "device": self.infer.describe(),
            "train_device": self.train.describe(),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "arch": self.args.arch,
        }

    def build(self) -> dict[str, Any]:
        if self.args.arch == "tiny":
            build_tiny_pipeline(self.model)
        else:
            build_sd15_architecture(self.model, self.train.device)
        files = list(self.model.rglob("*.safetensors"))
        return {"weights_gib": round(sum(p.stat().st_size for p in files) / 2**30, 2)}

    def inference(self) -> dict[str, Any]:
        _reset_peak(self.infer)
        backend, load_s = _timed(self.infer, lambda: DiffusersBackend(self.model, self.infer))
        self.backend_box["backend"] = backend
        backend.text2img(PROMPT, 2, self.size, 0)  # warm-up
        calls = []
        images: list[Image.Image] = []
        for seed in range(3):
            images, seconds = _timed(
                self.infer, lambda s=seed: backend.text2img(PROMPT, 25, self.size, s)
            )
            calls.append(round(seconds, 4))
        again = backend.text2img(PROMPT, 25, self.size, 2)
        same = np.array_equal(np.asarray(again[0]), np.asarray(images[0]))
        source = self.photos[0]
        restored, img2img_s = _timed(
            self.infer, lambda: backend.img2img(source, PROMPT, 0.6, 25, 0)
        )
        return {
            "placement": backend.placement.describe(),
            "load_s": round(load_s, 2),
            "text2img_25_steps_s": calls,
            "text2img_best_s": min(calls),
            "img2img_25x0.6_s": round(img2img_s, 4),
            "same_seed_same_pixels": same,
            "text2img_image": _image_stats(images),
            "img2img_image": _image_stats(restored),
            "peak_gpu_gib": _peak_gib(self.infer),
        }

    def inference_vs_raw(self) -> dict[str, Any]:
        """The backend against a plain diffusers pipeline on the same folder, same
        arguments and seeds, calls interleaved: the overhead ratio and pixel identity."""
        from diffusers import StableDiffusionPipeline

        backend = self.backend_box["backend"]
        raw = StableDiffusionPipeline.from_pretrained(
            str(self.model), dtype=self.infer.dtype, local_files_only=True, use_safetensors=True
        ).to(self.infer.device)
        raw.set_progress_bar_config(disable=True)

        def raw_call(seed: int) -> list[Image.Image]:
            generator = torch.Generator("cpu").manual_seed(seed)
            out = raw(PROMPT, height=self.size, width=self.size, num_inference_steps=25,
                      guidance_scale=7.5, generator=generator, output_type="pil")  # fmt: skip
            return list(out.images)

        raw_call(0)
        raw_s, ours_s, identical = [], [], []
        for seed in range(self.args.rounds):
            theirs, seconds = _timed(self.infer, lambda s=seed: raw_call(s))
            raw_s.append(round(seconds, 4))
            mine, seconds = _timed(
                self.infer, lambda s=seed: backend.text2img(PROMPT, 25, self.size, s)
            )
            ours_s.append(round(seconds, 4))
            identical.append(np.array_equal(np.asarray(theirs[0]), np.asarray(mine[0])))
        return {
            "raw_diffusers_s": raw_s,
            "backend_s": ours_s,
            "backend_over_raw_median": round(
                statistics.median(ours_s) / statistics.median(raw_s), 3
            ),
            "same_pixels_as_raw": identical,
        }

    def train_kind(self, kind: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            config = _config(kind, self.args.steps, self.size, self.class_steps)
            work = self.root / f"train-{kind}"
            result, record = _train(self.model, self.photos, config, work, self.train)
            if result is not None:
                self.trained[kind] = result
            return record

        return run

    def lora_resume(self) -> dict[str, Any]:
        config = _config("lora", self.args.steps, self.size, self.class_steps)
        work = self.root / "train-lora-resumed"
        half = config.checkpoint_every
        _, first = _train(self.model, self.photos, config, work, self.train, stop_at=half)
        result, second = _train(self.model, self.photos, config, work, self.train, resume=True)
        assert result is not None and result.resumed_from == half
        full = self.trained["lora"]
        return {
            "interrupted_at": half,
            "first_leg": first,
            "second_leg": second,
            "bitwise_equal_to_uninterrupted": result.sha256 == full.sha256,
            "max_abs_weight_diff": _max_abs_diff(result.path, full.path),
        }

    def priors_apply(self) -> dict[str, Any]:
        backend = self.backend_box["backend"]
        plain = np.asarray(backend.text2img(PROMPT, 25, self.size, 0)[0], dtype=np.float32)
        record: dict[str, Any] = {}
        for kind, result in self.trained.items():
            token = result.token if kind == "textual_inversion" else None
            prompt = f"a photo of {result.token}" if token else f"a photo of {result.token} person"
            ref = PriorRef(result.path, kind, result.sha256, token)
            base = np.asarray(backend.text2img(prompt, 25, self.size, 0)[0], dtype=np.float32)
            images, seconds = _timed(
                self.infer, lambda r=ref, p=prompt: backend.text2img(p, 25, self.size, 0, r)
            )
            with_prior = np.asarray(images[0], dtype=np.float32)
            record[kind] = {
                "seconds": round(seconds, 3),
                "mean_abs_change": round(float(np.abs(with_prior - base).mean()), 3),
                "image": _image_stats(images),
            }
        after = np.asarray(backend.text2img(PROMPT, 25, self.size, 0)[0], dtype=np.float32)
        record["no_leak_after_prior_jobs"] = bool(np.array_equal(after, plain))
        return record

    def cpu_baseline(self) -> dict[str, Any]:
        self.backend_box.clear()
        if self.infer.is_cuda:
            torch.cuda.empty_cache()
        config = TrainConfig(
            kind="lora",
            token="sks",
            steps=self.args.cpu_steps + 1,
            learning_rate=1e-4,
            resolution=self.size,
            prior_loss_weight=0.0,
            checkpoint_every=0,
        )
        cpu = resolve_placement("cpu", purpose="training")
        _, cpu_record = _train(self.model, self.photos, config, self.root / "cpu-lora", cpu)
        _, gpu_record = _train(
            self.model, self.photos, config, self.root / "gpu-lora-nopp", self.train
        )
        ratio = None
        if cpu_record.get("median_step_s") and gpu_record.get("median_step_s"):
            ratio = round(cpu_record["median_step_s"] / gpu_record["median_step_s"], 1)
        return {"cpu": cpu_record, "device": gpu_record, "cpu_over_device_per_step": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--steps", type=int, default=20, help="training steps per kind")
    parser.add_argument("--cpu-steps", type=int, default=2, help="CPU baseline LoRA steps")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved inference rounds")
    parser.add_argument(
        "--only-inference", action="store_true", help="stop after the inference sections"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)

    infer = resolve_placement(args.device)
    train = resolve_placement(args.device, purpose="training")
    size = 512 if args.arch == "sd15" else 64
    class_steps = 10 if args.arch == "sd15" else 2
    check = Check(args.out)
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    run = _Run(args, infer, train, size, class_steps, root, root / "model", _photos(size))

    check.section("environment", run.environment)
    check.section("build_model", run.build)
    check.section("inference", run.inference)
    check.section("inference_vs_raw_diffusers", run.inference_vs_raw)
    if args.only_inference:
        return _report(check)
    for kind in ("textual_inversion", "lora", "dreambooth"):
        check.section(f"train_{kind}", run.train_kind(kind))
    check.section("train_lora_resume", run.lora_resume)
    check.section("priors_apply", run.priors_apply)
    check.section("cpu_baseline_lora_no_prior_preservation", run.cpu_baseline)
    return _report(check)


def _report(check: Check) -> int:
    print("\n| section | ok | seconds | key numbers |\n| --- | --- | --- | --- |")
    for name, value in check.results.items():
        keys = {k: v for k, v in value.items() if k not in ("ok", "seconds")}
        print(f"| {name} | {value['ok']} | {value['seconds']} | {json.dumps(keys)[:300]} |")
    return 0 if all(v["ok"] for v in check.results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
