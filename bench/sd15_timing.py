"""Time the SD 1.5 pipeline call at real size, for the gateway overhead estimate.

``python -m bench.sd15_timing [--model DIR] [--steps 25] [--device cuda]``

Without ``--model`` it builds the Stable Diffusion 1.5 *architecture* from configs
(UNet 320/640/1280/1280 with cross-attention 768, the 4-channel VAE, a 12-layer
CLIP text encoder) with random weights: the compute per step is that of SD 1.5, the
pictures are noise. No weights are downloaded. It prints one JSON line: seconds for
the whole text-to-image call at 512x512, per UNet step, and for the VAE decode.
Standalone on purpose (torch + diffusers + transformers only), so it can run on a
GPU machine without the rest of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sd15_models(vocab_size: int, **token_ids: int) -> tuple[Any, Any, Any]:
    """SD 1.5's UNet, VAE and CLIP text encoder from configs, random weights (drawn
    from the global torch RNG, on the current default device). ``token_ids`` are
    ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` for the text config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            vocab_size=vocab_size,
            **token_ids,
        )
    )
    return unet, vae, text


def _sd15_from_configs(device: str, dtype: Any) -> Any:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    unet, vae, text = sd15_models(1000)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "photo</w>": 3}
    merges: list[tuple[str, str]] = []
    folder = "/tmp/sd15-tokenizer"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/vocab.json", "w") as handle:
        json.dump(vocab, handle)
    with open(f"{folder}/merges.txt", "w") as handle:
        handle.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(
        f"{folder}/vocab.json", f"{folder}/merges.txt", model_max_length=77
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe.to(device=device, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="a local SD 1.5 diffusers folder")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    if args.model:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(
            args.device
        )
    else:
        pipe = _sd15_from_configs(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    pipe("a photo", num_inference_steps=2, height=args.size, width=args.size)  # warm-up
    sync()
    totals = []
    for _ in range(args.runs):
        began = time.perf_counter()
        pipe("a photo", num_inference_steps=args.steps, height=args.size, width=args.size)
        sync()
        totals.append(time.perf_counter() - began)
    latents = torch.randn(
        1, 4, args.size // 8, args.size // 8, device=args.device, dtype=dtype
    )
    began = time.perf_counter()
    with torch.no_grad():
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    sync()
    decode = time.perf_counter() - began
    best = min(totals)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                "host": platform.node(),
                "torch": torch.__version__,
                "weights": args.model or "random (SD 1.5 architecture from configs)",
                "size": args.size,
                "steps": args.steps,
                "dtype": str(dtype),
                "call_seconds": [round(t, 4) for t in totals],
                "best_call_seconds": round(best, 4),
                "per_step_seconds": round((best - decode) / args.steps, 5),
                "vae_decode_seconds": round(decode, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
