"""Keep third-party chatter off the terminal: the CLI's stderr carries our one-line
errors (and, on a terminal, our own progress bars), nothing else.

Invariant: :func:`quiet_third_party` runs before any heavy library is imported (the
command modules import torch, diffusers and transformers inside their functions), so
the environment switches below are read by those libraries when they load. A library
already loaded by then (an embedding program, a test) read its environment too early:
its own switches are thrown instead (diffusers' "Loading pipeline components" bar,
transformers' "Loading weights" bar, the Hub's download bars). Warnings raised by
``consentry`` itself stay visible; with ``--verbose`` nothing is silenced.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["THIRD_PARTY_LOGGERS", "quiet_third_party"]

# Libraries that log through :mod:`logging` at WARNING on model loads and downloads.
THIRD_PARTY_LOGGERS = (
    "accelerate",
    "diffusers",
    "httpx",
    "huggingface_hub",
    "peft",
    "PIL",
    "torch",
    "torchvision",
    "transformers",
    "urllib3",
)

# Read at import by huggingface_hub, transformers, diffusers and tqdm (>= 4.66).
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
}


def quiet_third_party(verbose: bool = False) -> None:
    """Silence third-party warnings, log records below ERROR and progress bars,
    unless ``verbose``. A variable the user set already is left as they set it."""
    if verbose:
        return
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"consentry(\.|$)")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet_loaded_libraries()


# module -> its functions that turn its progress bars and chatter off
_SWITCHES = {
    "diffusers.utils.logging": ("disable_progress_bar", "set_verbosity_error"),
    "transformers.utils.logging": ("disable_progress_bar", "set_verbosity_error"),
    "huggingface_hub.utils": ("disable_progress_bars",),
}


def _quiet_loaded_libraries() -> None:
    """Throw the switches of the libraries already imported (they read the
    environment at import, before it was set); the others are left unimported."""
    for module, functions in _SWITCHES.items():
        loaded = sys.modules.get(module)
        for function in functions if loaded is not None else ():
            switch = getattr(loaded, function, None)
            if callable(switch):
                switch()
