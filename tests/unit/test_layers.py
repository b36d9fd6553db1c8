"""The package layers: data flows one way (image -> faces -> identity -> consent facts
-> policy -> backend -> post-check -> provenance -> log), and imports follow it.

Every ``consentry.*`` import of every module, at the top or inside a function, is
checked against the layer map below: a package may import only what its layer
allows, so ``faces/`` (engines, safe image input) depends on nothing above it and the
registry never imports the gate, a backend or the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

import consentry

BASE = {"errors", "hashing", "fsutil", "media", "config", "limits", "lazy"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "lazy": set(),
    "data": set(),  # shipped sample files only
    "hashing": {"errors"},
    "media": {"errors"},
    "limits": {"errors"},
    "fsutil": {"errors"},
    "config": {"errors", "fsutil"},
    "faces": BASE,
    "registry": BASE,
    "generation": BASE | {"faces", "registry"},
    "identity": BASE | {"faces", "registry"},
    "provenance": BASE | {"faces", "identity", "registry"},
    "gate": BASE | {"faces", "identity", "registry", "generation", "provenance"},
    "training": BASE | {"registry", "generation", "gate"},
    "server": BASE | {"faces", "identity", "registry", "generation", "provenance", "gate"},
}
ROOT = Path(consentry.__file__).parent


def _package_of(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {n.split(".")[1] for n in names if n.startswith("consentry.")}
    return found


def test_every_package_imports_only_its_layers() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package_of(path)
        if package in ("cli", "__init__", "__main__"):
            continue  # the entry points may use everything
        assert package in ALLOWED, f"{path}: a new package needs its place in the layer map"
        for target in _imports(path) - {package}:
            if target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports consentry.{target}")
    assert not wrong, wrong


def test_no_module_is_over_about_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 625
    }
    assert not long, long


# Modules that load a heavy or optional native library (torch, diffusers, c2pa, dlib,
# insightface): the only ones imported inside functions, so that a process that never
# runs a model or signs media never loads them. The CLI defers every import (start-up).
HEAVY = {
    "torch", "diffusers", "transformers", "peft", "safetensors", "accelerate",
    "consentry.faces.sface", "consentry.faces.dlib_engine", "consentry.faces.fused",
    "consentry.faces.insightface_engine", "consentry.generation.backends.personal",
    "consentry.generation.backends.diffusers_backend", "consentry.generation.exemplars",
    "consentry.generation.placement", "consentry.provenance.sign",
    "iscc_core", "pdqhash",  # fingerprints: iscc_core takes 0.6 s to import (pydantic, loguru)
}  # fmt: skip


def test_imports_inside_functions_are_only_of_heavy_modules() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        if _package_of(path) == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module:
                    name = node.module
                elif isinstance(node, ast.Import):
                    name = node.names[0].name
                else:
                    continue
                if name not in HEAVY and name.split(".")[0] not in HEAVY:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not wrong, wrong
