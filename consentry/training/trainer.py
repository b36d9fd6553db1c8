"""What one kind trains, and the prior file it writes.

:class:`Trainer` sets up the trainable part of a loaded pipeline for its kind,
gives the loop the text conditioning, and writes the prior:

``textual_inversion``
    ``{token: tensor(dim)}``: one learned vector for a new placeholder token
    (``"<sks-person>"``), which must not already be a word of the vocabulary.
    Only that vector is trained; the token's row is injected into the text
    encoder's input embeddings by a forward hook, so every other weight (and
    every other embedding row) stays bit-for-bit the base model's.
``lora``
    DreamBooth-LoRA on the UNet's attention projections (``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``), written by ``StableDiffusionPipeline.save_lora_weights``
    from ``get_peft_model_state_dict`` (keys ``unet.…lora_A/B.weight``), with the
    adapter's ``LoraConfig`` in the ``lora_adapter_metadata`` header
    (``target_modules`` sorted, so the bytes do not depend on hash seeds).
``dreambooth``
    The whole fine-tuned UNet as one state dict (``save_file(unet.state_dict())``).

Invariants
----------
* Everything but the trainable parameters is frozen (``requires_grad_(False)``,
  ``eval()``); the LoRA adapter is initialised from ``config.seed`` without
  touching the global RNG.
* A prior file is a function of its weights: files are written from detached
  CPU copies (:func:`cpu_tensors`) on every device, and
  :func:`sort_safetensors_metadata` puts the header's ``__metadata__`` in key
  order, so the same weights always give the same SHA-256.
* :func:`encode` turns prepared photos into per-image latent distributions in
  memory; the pixels are not kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import safetensors.torch
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from consentry.errors import EngineError, InputError
from consentry.training.config import TrainConfig

__all__ = ["Latents", "Trainer", "cpu_tensors", "encode", "sort_safetensors_metadata"]

_LORA_TARGETS = ("to_k", "to_out.0", "to_q", "to_v")
_ENCODE_BATCH = 8


def _to_tensor(arrays: Sequence[np.ndarray[Any, Any]]) -> torch.Tensor:
    stacked = np.stack(arrays).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


@dataclass
class Latents:
    """Per-image latent distributions (mean, std), already scaled for the UNet."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw latents for ``indices``; the noise comes from the CPU ``generator``."""
        mean = self.mean[indices.to(self.mean.device)]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + self.std[indices.to(self.std.device)] * noise.to(mean.device)


@torch.no_grad()
def encode(pipe: StableDiffusionPipeline, arrays: Sequence[np.ndarray[Any, Any]]) -> Latents:
    vae = pipe.vae
    scale = float(vae.config.scaling_factor)
    shift = vae.config.get("shift_factor")
    means, stds = [], []
    for start in range(0, len(arrays), _ENCODE_BATCH):
        pixels = _to_tensor(arrays[start : start + _ENCODE_BATCH]).to(vae.device, vae.dtype)
        distribution = vae.encode(pixels).latent_dist
        mean = distribution.mean
        if shift is not None:
            mean = mean - float(shift)
        means.append(mean * scale)
        stds.append(distribution.std * scale)
    return Latents(torch.cat(means), torch.cat(stds))


def _token_ids(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    """The prompt's padded token ids, on the text encoder's device."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return cast(torch.Tensor, ids).to(pipe.text_encoder.device)


@torch.no_grad()
def _text_states(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    return cast(torch.Tensor, pipe.text_encoder(_token_ids(pipe, prompt))[0])


class Trainer:
    """The trainable part of one kind: parameters, conditioning, the output file."""

    def __init__(self, pipe: StableDiffusionPipeline, config: TrainConfig) -> None:
        self.pipe = pipe
        self.config = config
        self.params: dict[str, torch.nn.Parameter] = {}
        self._hook: Any = None
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
            module.eval()
        if config.kind == "textual_inversion":
            self._setup_textual_inversion()
        elif config.kind == "lora":
            self._setup_lora()
        else:
            pipe.unet.requires_grad_(True)
            pipe.unet.train()
            self.params = dict(pipe.unet.named_parameters())
        if config.kind != "textual_inversion":
            self.instance_states = _text_states(pipe, config.prompt)
            self.class_states = _text_states(pipe, config.class_prompt)

    # textual inversion: a forward hook swaps the token's embedding for the vector
    def _setup_textual_inversion(self) -> None:
        pipe, token = self.pipe, self.config.token
        tokenizer = pipe.tokenizer
        vocab = tokenizer.get_vocab()
        if token in vocab or f"{token}</w>" in vocab:
            raise InputError(
                f"textual inversion token {token!r} is already a word of the vocabulary: "
                "choose a new placeholder such as '<name>'"
            )
        noun = self.config.class_prompt.split()[-1]
        noun_ids = tokenizer(noun, add_special_tokens=False).input_ids
        if not noun_ids:
            raise InputError(f"the class noun {noun!r} has no tokens to start from")
        if tokenizer.add_tokens([token]) != 1:
            raise InputError(f"cannot add the token {token!r} to the tokenizer")
        token_id = tokenizer.convert_tokens_to_ids(token)
        if tokenizer(token, add_special_tokens=False).input_ids != [token_id]:
            raise InputError(f"the token {token!r} does not tokenize to one new token")
        self.input_ids = _token_ids(pipe, self.config.prompt)
        if token_id not in self.input_ids[0].tolist():
            raise InputError(f"the instance prompt {self.config.prompt!r} loses the token")
        encoder = pipe.text_encoder
        with torch.random.fork_rng(devices=[]):  # resizing draws the new row at random
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = encoder.get_input_embeddings()
        with torch.no_grad():
            start = embeddings.weight[noun_ids].mean(dim=0)
            embeddings.weight[token_id] = start
        vector = torch.nn.Parameter(start.clone())
        self.params = {"embedding": vector}

        def swap(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> Any:
            mask = (args[0] == token_id).unsqueeze(-1)
            return torch.where(mask, vector.to(output.dtype).expand_as(output), output)

        self._hook = embeddings.register_forward_hook(swap)

    def _lora_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_rank,
            lora_dropout=0.0,
            init_lora_weights="gaussian",
            target_modules=list(_LORA_TARGETS),
        )

    def _setup_lora(self) -> None:
        unet = self.pipe.unet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            unet.add_adapter(self._lora_config())
        unet.train()
        self.params = {name: p for name, p in unet.named_parameters() if p.requires_grad}
        if not self.params or not all("lora" in name for name in self.params):
            raise EngineError("the LoRA adapter did not attach to the UNet's attention layers")

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def conditioning(self, batch: int, with_class: bool) -> torch.Tensor:
        if self.config.kind == "textual_inversion":
            states = self.pipe.text_encoder(self.input_ids)[0]
            return cast(torch.Tensor, states.expand(batch, -1, -1))
        parts = [self.instance_states.expand(batch, -1, -1)]
        if with_class:
            parts.append(self.class_states.expand(batch, -1, -1))
        return torch.cat(parts)

    def save(self, path: Path) -> None:
        """Write the prior to ``path`` (a staging location: written in place, then its
        header's metadata sorted by :func:`sort_safetensors_metadata`)."""
        if self.config.kind == "textual_inversion":
            vector = self.params["embedding"].detach().to("cpu", torch.float32).clone()
            safetensors.torch.save_file({self.config.token: vector}, str(path))
        elif self.config.kind == "dreambooth":
            state = self.pipe.unet.state_dict()
            safetensors.torch.save_file(cpu_tensors(state), str(path))
        else:
            metadata = self._lora_config().to_dict()  # type: ignore[no-untyped-call]
            metadata["target_modules"] = sorted(metadata["target_modules"])
            layers: dict[str, torch.nn.Module | torch.Tensor] = dict(
                cpu_tensors(get_peft_model_state_dict(self.pipe.unet))
            )
            StableDiffusionPipeline.save_lora_weights(
                path.parent,
                unet_lora_layers=layers,
                weight_name=path.name,
                unet_lora_adapter_metadata=metadata,
            )
        sort_safetensors_metadata(path)


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: what files are written from, on any device."""
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors header so its ``__metadata__`` entries are in key order.

    safetensors 0.8 writes ``__metadata__`` from a hash map, so a file with two
    or more metadata entries (``save_lora_weights`` writes ``format`` and
    ``lora_adapter_metadata``) gets a different byte order, hence a different
    SHA-256, on every save of the same weights. Sorting them makes the file a
    function of its content; tensor entries and data are left as written (their
    order is already deterministic) and the header stays 8-byte aligned.
    """
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or len(metadata) < 2:
        return
    header["__metadata__"] = dict(sorted(metadata.items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
