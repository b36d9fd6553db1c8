"""``consentry``'s public surface: complete, sorted, importable, and light to import."""

from __future__ import annotations

import subprocess
import sys

import consentry


def test_all_is_sorted_and_unique() -> None:
    assert list(consentry.__all__) == sorted(set(consentry.__all__))


def test_every_public_name_resolves_to_an_object_defined_in_consentry() -> None:
    for name in consentry.__all__:
        value = getattr(consentry, name)
        assert getattr(value, "__module__", "").startswith("consentry."), name
        assert getattr(value, "__name__", name) == name


def test_what_users_call_is_exported() -> None:
    for name in (
        "Registry",
        "Gateway",
        "CheckRequest",
        "RunRequest",
        "Receipt",
        "run_job",
        "verify_media",
        "VerifyResult",
        "audit_paths",
        "AuditReport",
        "ConsentryError",
        "LogIntegrityError",
    ):
        assert name in consentry.__all__, name
    assert "Gateway" in dir(consentry)


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    try:
        consentry.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("consentry.NoSuchThing resolved")


def test_importing_consentry_loads_no_face_engine_or_torch() -> None:
    code = (
        "import sys, consentry\n"
        "heavy = [m for m in ('torch', 'cv2', 'diffusers', 'dlib', 'faiss') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""


def test_from_consentry_import_works_for_every_public_name() -> None:
    """Each name of ``__all__`` imported by name in a fresh interpreter (nothing cached
    by an earlier attribute access) is the object its defining module holds."""
    code = (
        "import importlib, consentry\n"
        "for name in consentry.__all__:\n"
        "    scope = {}\n"
        "    exec(f'from consentry import {name}', scope)\n"
        "    value = scope[name]\n"
        "    home = importlib.import_module(value.__module__)\n"
        "    assert getattr(home, name) is value, name\n"
        "print(len(consentry.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(result.stdout) == len(consentry.__all__)


def test_importing_consentry_loads_no_database_or_crypto_library() -> None:
    code = (
        "import sys, consentry\n"
        "heavy = ('sqlmodel', 'sqlalchemy', 'cryptography', 'pydantic')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""
    light = subprocess.run(
        [sys.executable, "-c", "import consentry; consentry.Registry; import sys;"
         "print('sqlmodel' in sys.modules)"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert light.stdout.strip() == "True"  # the lazy name really loads the store
