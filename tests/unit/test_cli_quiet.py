"""The CLI keeps third-party warnings, log lines and progress bars off stderr."""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = """
import logging, sys, warnings
from consentry.cli.quiet import quiet_third_party
quiet_third_party(verbose=sys.argv[1] == "verbose")
warnings.warn_explicit("torchvision says", UserWarning, "x.py", 1, module="torchvision.io")
logging.getLogger("transformers.modeling_utils").warning("transformers says")
from tqdm import tqdm
for _ in tqdm(range(3), desc="tqdm bar"):
    pass
warnings.warn_explicit("consentry says", UserWarning, "y.py", 1, module="consentry.faces")
"""


def _stderr(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "PYTHONWARN"))}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True, text=True, timeout=120, check=True, env=env,
    )  # fmt: skip
    return result.stderr


def test_library_warnings_logs_and_bars_are_silenced_but_ours_are_not() -> None:
    err = _stderr("quiet")
    assert "torchvision says" not in err
    assert "transformers says" not in err
    assert "tqdm bar" not in err
    assert "consentry says" in err


def test_verbose_lets_everything_through() -> None:
    err = _stderr("verbose")
    for line in ("torchvision says", "transformers says", "tqdm bar", "consentry says"):
        assert line in err, (line, err)


_PRELOADED = """
import sys
import transformers.utils.logging as tlog
from consentry.cli.quiet import quiet_third_party
quiet_third_party(verbose=sys.argv[1] == "verbose")
for _ in tlog.tqdm(range(3), desc="transformers bar"):
    pass
tlog.get_logger("transformers.modeling_utils").warning("transformers logger says")
"""


def test_a_library_loaded_before_the_switch_is_silenced_too() -> None:
    """transformers read TQDM_*/TRANSFORMERS_VERBOSITY at import, before the CLI set
    them: its own switches are thrown instead (quiet), and left alone (verbose)."""
    dropped = ("TQDM_", "PYTHONWARN", "HF_HUB_DISABLE", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    runs = {}
    for mode in ("quiet", "verbose"):
        result = subprocess.run(
            [sys.executable, "-c", _PRELOADED, mode],
            capture_output=True, text=True, timeout=120, check=True, env=env,
        )  # fmt: skip
        runs[mode] = result.stderr
    assert "transformers bar" in runs["verbose"] and "logger says" in runs["verbose"]
    assert runs["quiet"] == "", runs["quiet"]
