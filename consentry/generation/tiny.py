"""A tiny, real Stable Diffusion pipeline built from configs, for tests and demos.

:func:`build_tiny_pipeline` writes a complete ``diffusers`` model folder
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``; safetensors weights only, no safety checker) that
:func:`consentry.generation.backends.diffusers_backend.load_pipeline` loads
like any Stable Diffusion 1.x folder. The weights are random, drawn from a fixed
seed, so the images are noise-like but every code path (text encoder, UNet with
cross-attention, VAE, scheduler, LoRA and textual-inversion loading, img2img)
is the real one. Nothing is downloaded.

Shapes: 64x64 images (``unet.sample_size`` 32, VAE scale factor 2), text width
32, 77 positions, and a byte-level BPE vocabulary of a few hundred entries built
in code: every printable ASCII character (alone and word-final), the
placeholder-friendly punctuation ``< > - _``, and common prompt words.
"""

from __future__ import annotations

import argparse
import itertools
import string
from pathlib import Path

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

__all__ = [
    "TINY_IMAGE_SIZE",
    "TINY_WORDS",
    "assemble_pipeline",
    "build_tiny_pipeline",
    "make_tiny_pipeline",
    "make_tiny_tokenizer",
]

TINY_IMAGE_SIZE = 64
"""The pipeline's native image side, in pixels."""

TINY_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "at", "by", "with", "and", "or", "for", "to",
    "photo", "photograph", "portrait", "picture", "painting", "drawing", "sketch", "render",
    "person", "man", "woman", "child", "people", "face", "head", "eyes", "hair", "smile",
    "smiling", "standing", "sitting", "walking", "looking", "wearing", "holding",
    "hat", "shirt", "jacket", "dress", "glasses",
    "red", "orange", "yellow", "green", "blue", "purple", "black", "white", "gray", "golden",
    "background", "studio", "light", "lighting", "dark", "bright", "sunset", "night", "day",
    "city", "street", "park", "beach", "forest", "mountain", "room", "office", "garden",
    "dog", "cat", "bird", "horse", "car", "house", "tree", "flower", "sky", "water",
    "high", "quality", "detailed", "sharp", "blurry", "style", "oil", "watercolor", "cinematic",
    "close", "up", "full", "body", "sks", "token", "subject", "likeness",
)  # fmt: skip
"""Words that tokenize to one token each (besides single characters)."""

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_EOW = "</w>"
_CHARS = string.ascii_lowercase + string.digits + "<>-_.,:;!?'\"()[]{}/&+*=#@%$~^`|\\"


def _learn_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-pair merges learned from ``words`` until each word is one symbol.

    A deterministic, minimal BPE trainer: at each step the most frequent
    adjacent pair wins, ties going to the lexicographically smallest pair.
    Applying the merges in rank order (what BPE does) turns every training word
    back into a single token.
    """
    segmented = [[*word[:-1], word[-1] + _EOW] for word in dict.fromkeys(words)]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in segmented:
            for pair in itertools.pairwise(symbols):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for index, symbols in enumerate(segmented):
            merged: list[str] = []
            position = 0
            while position < len(symbols):
                if tuple(symbols[position : position + 2]) == best:
                    merged.append(best[0] + best[1])
                    position += 2
                else:
                    merged.append(symbols[position])
                    position += 1
            segmented[index] = merged


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny vocabulary: characters, word-final characters, merge results, specials."""
    merges = _learn_merges(TINY_WORDS)
    tokens = [*_CHARS, *(char + _EOW for char in _CHARS)]
    tokens += [left + right for left, right in merges]
    tokens += [_BOS, _EOS]
    unique = list(dict.fromkeys(tokens))
    return {token: index for index, token in enumerate(unique)}, merges


def make_tiny_tokenizer() -> CLIPTokenizer:
    """The tiny pipeline's CLIP tokenizer, built in code (77 positions, pads with EOS)."""
    vocab, merges = _vocab_and_merges()
    # tokenizers' BPE wants (left, right) tuples; transformers annotates ``list[str]``.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]


def make_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny pipeline in memory; the same ``seed`` gives the same weights.

    The global torch RNG state is left as it was.
    """
    tokenizer = make_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=TINY_IMAGE_SIZE // 2,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=TINY_IMAGE_SIZE,
        )
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_config)
    return assemble_pipeline(unet, vae, text_encoder, tokenizer)


def assemble_pipeline(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline of these components with SD 1.x's DDIM schedule
    (scaled-linear betas 0.00085..0.012), no safety checker."""
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def build_tiny_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``out_dir`` (created if needed) and return it.

    The folder holds ``model_index.json`` and safetensors weights only; the
    same ``seed`` gives byte-identical weights.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = make_tiny_pipeline(seed)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m consentry.generation.tiny DIR [--seed N]``: write the tiny pipeline.

    A stand-in model folder for trying ``generate``, ``restore --model`` and
    ``prior train`` without Stable Diffusion weights (random weights: 64 px noise).
    """
    parser = argparse.ArgumentParser(
        prog="python -m consentry.generation.tiny",
        description="Write a tiny random-weight Stable Diffusion folder (diffusers layout).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    args = parser.parse_args(argv)
    print(build_tiny_pipeline(args.out_dir, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
