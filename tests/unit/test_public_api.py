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
