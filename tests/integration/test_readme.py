"""The README is code: every shell block in it runs as written, on a fresh home.

Every fenced block whose info string is ``sh`` or ``bash`` is extracted in order
and run, all of them in **one** bash session (``set -euo pipefail``), so that
variables a block sets (``$SUBJECT``, ``$GRANT``) reach the blocks after it, as
they would for a reader typing them into one terminal. The session runs in a
fresh temporary folder that stands in for the repository root (every top-level
entry of the repository is symlinked into it, ``.venv`` pointing at the venv
running the tests), with a fresh ``HOME``, no ``CONSENTRY_*`` variable but a
temporary ``CONSENTRY_WITNESS_DIR``, and nothing of the venv on ``PATH``: the
README's own ``. .venv/bin/activate`` puts ``consentry`` there. Files the commands
need are created by the blocks themselves or shipped in the repository.

A block that cannot run here (it installs packages, needs a GPU or a model that
is not shipped, runs the whole suite, or serves in the foreground) is marked in
the README, on the line right before its fence, with
``<!-- readme-test: skip (REASON) -->``; the reason is required and the test
prints every skipped block with its line and reason. An unmarked block that fails
fails the test with the block's README line, the failing command and the tail of
its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL_INFO = frozenset({"sh", "bash"})
OTHER_INFO = frozenset({"python", "text", ""})
SKIP_RE = re.compile(r"^<!-- readme-test: skip \((?P<reason>[^()]+(?:\([^()]*\)[^()]*)*)\) -->$")
MARK_RE = re.compile(r"^<!-- readme-test")
FENCE_RE = re.compile(r"^```(?P<info>[A-Za-z0-9_-]*)\s*$")
BLOCK_MARK = "::readme-block "
FAIL_MARK = "::readme-fail "
TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string, the README line of its first code line,
    its lines, and the skip reason (``None`` when it runs)."""

    info: str
    line: int
    lines: tuple[str, ...]
    skip: str | None


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` in order; a malformed skip marker is an error."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE_RE.match(lines[i])
        if fence is None:
            i += 1
            continue
        info = fence.group("info")
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"README.md:{i + 1}: block never closed")
        skip = _skip_reason(lines, i)
        blocks.append(Block(info, start + 1, tuple(lines[start:end]), skip))
        i = end + 1
    return blocks


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    """The skip reason on the non-blank line before the fence, or ``None``."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not MARK_RE.match(lines[j].strip()):
        return None
    match = SKIP_RE.match(lines[j].strip())
    if match is None:
        raise AssertionError(
            f"README.md:{j + 1}: malformed marker (want <!-- readme-test: skip (REASON) -->)"
        )
    return match.group("reason").strip()


def build_script(blocks: list[Block]) -> str:
    """One bash script running every unskipped shell block in order; each block
    announces its README line, and the ERR trap names the failing command."""
    out = [
        "set -euo pipefail",
        f"trap 'echo \"{FAIL_MARK}$BASH_COMMAND (exit $?)\" >&2' ERR",
    ]
    for block in blocks:
        if block.info not in SHELL_INFO or block.skip is not None:
            continue
        out.append(f'echo "{BLOCK_MARK}{block.line} at ${{SECONDS}}s" >&2')
        out.extend(block.lines)
    out.append(f'echo "{BLOCK_MARK}end at ${{SECONDS}}s" >&2')
    return "\n".join(out) + "\n"


def _stand_in_root(root: Path) -> Path:
    """A folder that looks like the repository root: every top-level entry linked."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name in {".git", ".venv"}:
            continue
        (root / entry.name).symlink_to(entry)
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    env.pop("VIRTUAL_ENV", None)
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin]
    env.update(
        HOME=str(tmp / "home"),
        PATH=os.pathsep.join(path),
        CONSENTRY_WITNESS_DIR=str(tmp / "witness"),
        CONSENTRY_DEVICE="cpu",  # the suite runs on the CPU everywhere (tests/conftest.py)
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    (tmp / "home").mkdir()
    return env


def test_every_block_has_a_known_info_string() -> None:
    blocks = parse_blocks(README.read_text(encoding="utf-8"))
    unknown = [(b.line, b.info) for b in blocks if b.info not in SHELL_INFO | OTHER_INFO]
    assert unknown == [], f"blocks with an info string the README test does not know: {unknown}"
    misplaced = [b.line for b in blocks if b.skip is not None and b.info not in SHELL_INFO]
    assert misplaced == [], f"skip markers on blocks that are not shell blocks: {misplaced}"


def test_parser_finds_blocks_and_markers() -> None:
    text = "\n".join(
        [
            "```sh",
            "echo one",
            "```",
            "<!-- readme-test: skip (needs a GPU (CUDA)) -->",
            "```bash",
            "nvidia-smi",
            "```",
            "```python",
            "print(1)",
            "```",
        ]
    )
    blocks = parse_blocks(text)
    assert [(b.info, b.line, b.skip) for b in blocks] == [
        ("sh", 2, None),
        ("bash", 6, "needs a GPU (CUDA)"),
        ("python", 9, None),
    ]
    assert "nvidia-smi" not in build_script(blocks)
    assert "echo one" in build_script(blocks)
    with pytest.raises(AssertionError, match="malformed marker"):
        parse_blocks("<!-- readme-test: skip -->\n```sh\necho\n```\n")


def test_readme_runs_as_written(tmp_path: Path) -> None:
    blocks = [b for b in parse_blocks(README.read_text(encoding="utf-8")) if b.info in SHELL_INFO]
    skipped = [b for b in blocks if b.skip is not None]
    run = [b for b in blocks if b.skip is None]
    print(f"\nREADME shell blocks: {len(blocks)}, run: {len(run)}, skipped: {len(skipped)}")
    for block in skipped:
        print(f"  skipped README.md:{block.line}: {block.skip}")
    assert run, "no README shell block runs"
    root = _stand_in_root(tmp_path / "repo")
    script = tmp_path / "readme.sh"
    script.write_text(build_script(blocks), encoding="utf-8")
    proc = subprocess.run(
        ["bash", str(script)],
        cwd=root,
        env=_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    marks = [
        ln[len(BLOCK_MARK) :].split(" at ")[0]
        for ln in proc.stderr.splitlines()
        if ln.startswith(BLOCK_MARK)
    ]
    failed = [ln[len(FAIL_MARK) :] for ln in proc.stderr.splitlines() if ln.startswith(FAIL_MARK)]
    if proc.returncode != 0 or marks[-1:] != ["end"]:
        where = f"README.md:{marks[-1]}" if marks else "before the first block"
        pytest.fail(
            f"README block at {where} failed (exit {proc.returncode}): "
            f"{failed[0] if failed else 'no command named'}\n"
            f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n"
            f"--- stderr (tail) ---\n{proc.stderr[-3000:]}"
        )
    assert marks == [str(b.line) for b in run] + ["end"]
