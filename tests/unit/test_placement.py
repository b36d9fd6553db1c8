"""Device and dtype names: what each resolves to, and what is refused."""

from __future__ import annotations

import pytest
import torch

from consentry.errors import InputError
from consentry.generation.placement import (
    DEVICE_ENV,
    DTYPE_ENV,
    Placement,
    cpu_placement,
    resolve_placement,
)

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _no_placement_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv(DTYPE_ENV, raising=False)


def test_cpu_is_float32() -> None:
    assert resolve_placement("cpu") == Placement(torch.device("cpu"), torch.float32)
    assert resolve_placement(" CPU ") == cpu_placement()
    assert cpu_placement().describe() == "cpu float32"


def test_auto_picks_the_gpu_only_when_there_is_one() -> None:
    auto = resolve_placement()
    if HAS_CUDA:
        assert auto == Placement(torch.device("cuda", 0), torch.float16)
        assert resolve_placement(purpose="training").dtype == torch.float32
    else:
        assert auto == cpu_placement()
        assert resolve_placement("auto", "auto", purpose="training") == cpu_placement()


def test_a_missing_gpu_is_refused_not_replaced_by_the_cpu() -> None:
    with pytest.raises(InputError, match="CUDA"):
        resolve_placement("cuda:4096")
    if not HAS_CUDA:
        for name in ("cuda", "cuda:0"):
            with pytest.raises(InputError, match="asked for") as raised:
                resolve_placement(name)
            assert raised.value.hint == "use --device cpu"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "", "mps", "cpu:0", "tpu"])
def test_unknown_device_names_are_refused(name: str) -> None:
    with pytest.raises(InputError):
        resolve_placement(name)


def test_dtypes_per_device_and_purpose() -> None:
    assert resolve_placement("cpu", "bfloat16").dtype == torch.bfloat16
    assert resolve_placement("cpu", "float32").dtype == torch.float32
    with pytest.raises(InputError, match="GPU only"):
        resolve_placement("cpu", "float16")
    for dtype in ("float16", "bfloat16"):
        with pytest.raises(InputError, match="float32"):
            resolve_placement("cpu", dtype, purpose="training")
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_placement("cpu", "int8")
    with pytest.raises(InputError):
        resolve_placement(3, None)  # type: ignore[arg-type]


def test_environment_variables_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setenv(DTYPE_ENV, "bfloat16")
    assert resolve_placement() == Placement(torch.device("cpu"), torch.bfloat16)
    assert resolve_placement(dtype="float32").dtype == torch.float32  # an argument wins
    # training ignores the inference dtype rather than refusing to start
    assert resolve_placement(purpose="training") == cpu_placement()
    monkeypatch.setenv(DEVICE_ENV, "quantum")
    with pytest.raises(InputError, match="quantum"):
        resolve_placement()
    assert resolve_placement("cpu").device.type == "cpu"
