"""The subject signs on their own device: ``grant --prepare``, ``sign``, ``submit`` and
``revoke --prepare`` as subprocesses, the subject's side with no registry home at all."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import Cli, assert_one_line_error, initialised


def test_a_subject_grants_and_revokes_from_their_own_device(tmp_path: Path) -> None:
    operator = initialised(tmp_path / "operator", f"sqlite:///{tmp_path}/r.db")
    device = tmp_path / "device"  # the subject's machine: their key, no home
    device.mkdir()
    subject = Cli(device / "no-home")  # CONSENTRY_HOME points at nothing
    subject.ok("keys", "generate", str(device / "ada.key"))
    operator.ok("subject", "add", "Ada Lovelace", "--public-key", str(device / "ada.key.pub"))
    operator.ok("grantee", "add", "Studio")

    prepared = operator("grant", "Ada Lovelace", "--to", "Studio", "--purpose", "restore",
                        "--until", "2030-01-01", "--prepare")  # fmt: skip
    assert prepared.code == 0, prepared.err
    assert "let " in prepared.err and "restore" in prepared.err  # the plain words
    request = device / "grant.json"
    request.write_text(prepared.out)
    assert json.loads(prepared.out)["signatures"] == []
    assert operator.json("grants") == []  # nothing recorded before the subject signs

    signed = subject.ok("sign", str(request), "--key", str(device / "ada.key")).strip()
    assert signed == str(device / "grant.signed.json")
    assert not (device / "no-home").exists()  # signing needed no registry
    grant_id = operator.ok("submit", signed).strip()
    grants = operator.json("grants")
    assert [g["id"] for g in grants] == [grant_id]  # type: ignore[index]

    again = operator("submit", signed)
    assert_one_line_error(again, 1, "replay")

    revoke = operator("revoke", grant_id, "--reason", "no longer", "--prepare")
    assert revoke.code == 0, revoke.err
    (device / "revoke.json").write_text(revoke.out)
    signed_revocation = subject.ok(
        "sign", str(device / "revoke.json"), "--key", str(device / "ada.key")
    ).strip()
    receipt = operator.json("submit", signed_revocation)
    assert receipt["type"] == "revocation" and receipt["log_index"] > 0  # type: ignore[index]
    assert operator.json("grants")[0]["status"] == "revoked"  # type: ignore[index]
    assert operator.json("log", "verify")["ok"] is True  # type: ignore[index]


def test_signing_with_the_wrong_key_or_a_changed_file_is_a_clear_error(tmp_path: Path) -> None:
    operator = initialised(tmp_path / "operator", f"sqlite:///{tmp_path}/r.db")
    operator.ok("keys", "generate", str(tmp_path / "ada.key"))
    operator.ok("keys", "generate", str(tmp_path / "eve.key"))
    operator.ok("subject", "add", "Ada", "--public-key", str(tmp_path / "ada.key.pub"))
    operator.ok("grantee", "add", "Studio")
    request = tmp_path / "g.json"
    request.write_text(operator.ok("grant", "Ada", "--to", "Studio", "--purpose", "restore",
                                   "--prepare"))  # fmt: skip
    assert_one_line_error(
        operator("sign", str(request), "--key", str(tmp_path / "eve.key")), 1, "is for key"
    )
    signed = Path(operator.ok("sign", str(request), "--key", str(tmp_path / "ada.key")).strip())
    envelope = json.loads(signed.read_text())
    envelope["payload"] = envelope["payload"][:-8] + "AAAAAAA="  # bytes changed after signing
    signed.write_text(json.dumps(envelope))
    assert_one_line_error(operator("submit", str(signed)), 1, "error")
    assert operator.json("grants") == []
    assert_one_line_error(operator("sign", str(tmp_path / "missing.json"), "--key",
                                   str(tmp_path / "ada.key")), 2, "cannot read")  # fmt: skip


def test_a_lost_key_is_replaced_and_the_old_one_signs_nothing_more(tmp_path: Path) -> None:
    operator = initialised(tmp_path / "operator", f"sqlite:///{tmp_path}/r.db")
    for name in ("old", "new"):
        operator.ok("keys", "generate", str(tmp_path / f"{name}.key"))
    operator.ok("subject", "add", "Ada", "--public-key", str(tmp_path / "old.key.pub"))
    operator.ok("grantee", "add", "Studio")
    grant_request = tmp_path / "grant.json"
    grant_request.write_text(operator.ok("grant", "Ada", "--to", "Studio", "--purpose",
                                         "restore", "--prepare"))  # fmt: skip
    stale = operator.ok("sign", str(grant_request), "--key", str(tmp_path / "old.key")).strip()

    change = operator("subject", "change-key", "Ada", "--new-public-key",
                      str(tmp_path / "new.key.pub"), "--by-operator")  # fmt: skip
    assert_one_line_error(change, 2, "needs a reason")
    change = operator("subject", "change-key", "Ada", "--new-public-key",
                      str(tmp_path / "new.key.pub"), "--by-operator",
                      "--reason", "phone lost")  # fmt: skip
    assert change.code == 0 and "phone lost" in change.err
    (tmp_path / "change.json").write_text(change.out)
    signed = operator.ok("sign", str(tmp_path / "change.json"), "--key",
                         str(tmp_path / "new.key")).strip()  # fmt: skip
    operator.ok("submit", signed)

    assert_one_line_error(operator("submit", stale), 1, "current key")  # signed by the old key
    fresh = tmp_path / "grant2.json"
    fresh.write_text(operator.ok("grant", "Ada", "--to", "Studio", "--purpose", "restore",
                                 "--prepare"))  # fmt: skip
    assert_one_line_error(operator("sign", str(fresh), "--key", str(tmp_path / "old.key")), 1,
                          "is for key")  # fmt: skip
    operator.ok(
        "submit", operator.ok("sign", str(fresh), "--key", str(tmp_path / "new.key")).strip()
    )
    assert operator.json("log", "verify")["ok"] is True  # type: ignore[index]
