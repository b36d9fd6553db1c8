"""A module-scoped fixture for diffusers tests: no network at all, torch on one thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def offline_single_thread() -> Iterator[None]:
    """No network for anything in the importing module; torch on one thread."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield
    torch.set_num_threads(threads)
