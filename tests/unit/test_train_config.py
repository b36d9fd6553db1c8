"""`TrainConfig.for_kind`: the one home of per-kind defaults, for the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.errors import InputError
from consentry.training import KIND_DEFAULTS, TrainConfig

KINDS = ("textual_inversion", "lora", "dreambooth")
ROOT = Path(__file__).resolve().parents[2]

# The configuration `consentry prior train --kind K` trained before the training package
# existed (its defaults were then written in the CLI). The job's default work folder is
# named after this hash, so `--resume` after an upgrade depends on it staying the same.
CLI_RECIPES = {
    "textual_inversion": "2aa5e0097ec718a19f30f0384346b5502d7b8f21f6f73de36e9856198a87d76e",
    "lora": "7f2cef210385c2fcaf098755ec2f1b7ac8f93024b0cf64ae997523e0b4602a16",
    "dreambooth": "3ba456349756c24269cfcbcc73429b944c87ea5b3fbee26f6797b70e4b38c463",
}


def cli_config(*args: str) -> dict[str, object]:
    """What `prior train ... --dry-run --json` resolves (parsed by the real CLI, in process)."""
    result = CliRunner().invoke(app, ["prior", "train", "Ada", *args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS)
def test_library_default_is_the_cli_default(kind: str) -> None:
    library = TrainConfig.for_kind(kind)
    for spelling in {kind, kind.replace("_", "-")}:
        shown = cli_config("--kind", spelling)
        assert shown["config"] == library.to_dict()
        assert shown["config_sha256"] == library.sha256() == CLI_RECIPES[kind]
    assert library.token == KIND_DEFAULTS[kind].token  # type: ignore[index]
    assert library.learning_rate == KIND_DEFAULTS[kind].learning_rate  # type: ignore[index]


def test_cli_options_override_like_for_kind() -> None:
    shown = cli_config("--kind", "lora", "--lr", "0.003", "--steps", "7", "--token", "zwx",
                       "--checkpoint-every", "0", "--class-images", "3")  # fmt: skip
    expected = TrainConfig.for_kind(
        "lora", learning_rate=0.003, steps=7, token="zwx", checkpoint_every=0, num_class_images=3
    )
    assert shown["config"] == expected.to_dict()
    assert expected.prompt == "a photo of zwx person"


def test_per_kind_learning_rates_differ_as_intended() -> None:
    """The bug this replaced: a library caller got dreambooth's rate for every kind."""
    rates = {kind: TrainConfig.for_kind(kind).learning_rate for kind in KINDS}
    assert rates == {"textual_inversion": 5e-3, "lora": 1e-4, "dreambooth": 5e-6}
    assert TrainConfig.for_kind("textual_inversion").token == "<sks-person>"


def test_default_resolution_is_the_kept_photo_size() -> None:
    from consentry.faces.quality import EXEMPLAR_SIZE

    assert TrainConfig.for_kind("lora").resolution == EXEMPLAR_SIZE


def test_for_kind_refuses_bad_kinds_fields_and_values() -> None:
    with pytest.raises(InputError, match="unknown prior kind"):
        TrainConfig.for_kind("exemplars")
    with pytest.raises(InputError, match=r"unknown training setting.*learning_rte"):
        TrainConfig.for_kind("lora", learning_rte=1e-3)
    with pytest.raises(InputError, match="learning_rate"):
        TrainConfig.for_kind("lora", learning_rate=0.0)
    with pytest.raises(InputError, match="one word"):
        TrainConfig.for_kind("lora", token="two words")
    # the honest equivalents
    assert TrainConfig.for_kind("lora", learning_rate=1e-3).learning_rate == 1e-3
    assert TrainConfig.for_kind("dreambooth", token="zwx").token == "zwx"


def test_cli_dry_run_refuses_a_bad_configuration() -> None:
    result = CliRunner().invoke(app, ["prior", "train", "Ada", "--kind", "lora", "--lr", "2",
                                      "--dry-run"])  # fmt: skip
    assert isinstance(result.exception, InputError), result.output
    assert "learning_rate must be in (0, 1]" in str(result.exception)
    assert cli_config("--kind", "lora", "--lr", "1")["config"]["learning_rate"] == 1  # type: ignore[index]


def test_importing_the_config_loads_no_torch() -> None:
    code = (
        "import sys, consentry.training, consentry.training.config, consentry.cli.train_cmds; "
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.split() == ["False", "False"]
