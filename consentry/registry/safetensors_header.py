"""Strict validation of a safetensors file's structure, without importing torch.

A weights prior (textual inversion, LoRA, DreamBooth) is stored under a
``.safetensors`` name and later handed to a loader; a pickle checkpoint renamed
``.safetensors`` (or any other bytes) must be refused when it is registered,
not discovered by the loader. :func:`check_safetensors` reads only the header
and the file size.

The format (https://github.com/huggingface/safetensors): 8 bytes, a
little-endian unsigned header length ``N``; ``N`` bytes of UTF-8 JSON (an object,
possibly right-padded with spaces); then the data buffer. The JSON maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into
the data buffer), plus an optional ``"__metadata__"`` object of strings.

Invariants (each violated one is a :class:`~consentry.errors.PriorFileError`)
- ``0 < N <= MAX_HEADER_BYTES`` and ``8 + N <= file size``; the header is
  UTF-8, begins with ``{``, parses as one JSON object with no duplicate key.
- Every tensor has exactly those three keys, a known dtype, a shape of
  non-negative integers, and ``end - begin == product(shape) * itemsize``.
- Tensors, sorted by offset, tile the data buffer exactly: the first begins at
  0, each begins where the previous ends, the last ends at the file's end (no
  gap, overlap or trailing bytes: nothing hides beside the tensors).
- At least one tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consentry.errors import PriorFileError

__all__ = ["DTYPE_BYTES", "MAX_HEADER_BYTES", "SafetensorsInfo", "check_safetensors"]

MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Largest header accepted (an SDXL LoRA's header is a few hundred KB)."""

DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
"""Byte size of every dtype accepted (sub-byte dtypes are refused)."""

_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class SafetensorsInfo:
    """What a valid header says: tensor count, header length, data bytes."""

    tensors: int
    header_bytes: int
    data_bytes: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad(name: str, why: str) -> PriorFileError:
    return PriorFileError(f"{name} is not a valid safetensors file: {why}")


def check_safetensors(path: Path) -> SafetensorsInfo:
    """Validate ``path`` as a safetensors file (see the module invariants).

    Raises :class:`PriorFileError` naming what is wrong; reads at most
    ``8 + MAX_HEADER_BYTES`` bytes.
    """
    name = Path(path).name
    size, raw = _read_header(path, name)
    header = _parse_header(raw, name)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(name, "__metadata__ is not an object of strings")
    data_bytes = size - 8 - len(raw)
    spans = [_tensor_span(name, tensor, entry) for tensor, entry in header.items()]
    if not spans:
        raise _bad(name, "it holds no tensors")
    _check_tiling(name, spans, data_bytes)
    return SafetensorsInfo(len(spans), len(raw), data_bytes)


def _read_header(path: Path, name: str) -> tuple[int, bytes]:
    """``(file size, header bytes)``: the 8-byte length, then exactly that many bytes."""
    try:
        with Path(path).open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _bad(name, f"{size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > MAX_HEADER_BYTES:
                raise _bad(name, f"header length {length} is outside 1..{MAX_HEADER_BYTES} bytes")
            if 8 + length > size:
                raise _bad(name, f"header length {length} runs past the end ({size} bytes)")
            raw = handle.read(length)
    except OSError as exc:
        raise PriorFileError(f"cannot read the prior file {path}: {exc.strerror}") from exc
    if len(raw) != length:
        raise _bad(name, "the file changed while it was read")
    return size, raw


def _parse_header(raw: bytes, name: str) -> dict[str, Any]:
    """The header as one UTF-8 JSON object without duplicate keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(name, "the header is not UTF-8") from None
    if not text.startswith("{"):
        raise _bad(name, "the header is not a JSON object")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _bad(name, f"the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(name, "the header is not a JSON object")
    return header


def _tensor_span(name: str, tensor: str, entry: object) -> tuple[int, int, str]:
    """``(begin, end, tensor)`` of one well-formed tensor entry whose byte span fits
    its dtype and shape."""
    if not isinstance(entry, dict) or set(entry) != _TENSOR_KEYS:
        raise _bad(name, f"tensor {tensor!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise _bad(name, f"tensor {tensor!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise _bad(name, f"tensor {tensor!r} has a malformed shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_uint(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _bad(name, f"tensor {tensor!r} has malformed data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - begin != expected:
        raise _bad(
            name,
            f"tensor {tensor!r} spans {end - begin} bytes, but {dtype} {shape} needs {expected}",
        )
    return begin, end, tensor


def _check_tiling(name: str, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """Sorted by offset, the spans tile ``[0, data_bytes)`` with no gap or overlap."""
    position = 0
    for begin, end, tensor in sorted(spans):
        if begin != position:
            raise _bad(
                name,
                f"tensor {tensor!r} begins at {begin}, not at {position} "
                "(tensors overlap or leave a gap)",
            )
        position = end
    if position != data_bytes:
        raise _bad(name, f"the tensors cover {position} data bytes, but the file has {data_bytes}")
