"""Attacks on priors: bytes released under another subject's grant, and weight files
that are not what their name says.

Every test asserts the refusal *and* that the honest equivalent (the subject's own
prior with the subject's own grant, a real safetensors file) is accepted and
released, so a gate that refuses everything fails here too.
"""

from __future__ import annotations

import json
import pickle
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from consentry.errors import PriorFileError, PriorOwnerError
from consentry.gate import CheckRequest
from consentry.registry.prior_files import prior_store_path, store_prior_file
from consentry.registry.safetensors_header import MAX_HEADER_BYTES
from tests.support.cli import Cli
from tests.support.worlds import TwoSubjects, two_subjects


def _weights(seed: int = 0) -> bytes:
    """A real safetensors LoRA-shaped file (two tensors)."""
    rng = np.random.default_rng(seed)
    return save(
        {
            "lora_down.weight": rng.standard_normal((4, 32)).astype(np.float32),
            "lora_up.weight": rng.standard_normal((32, 4)).astype(np.float16),
        },
        metadata={"format": "pt"},
    )


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[TwoSubjects]:
    """Alice Example (the owner of the first registration) and Bob Example."""
    yield from two_subjects(tmp_path, db_url, "Alice Example", "Bob Example")


def _register(world: TwoSubjects, subject: str, name: str, data: bytes) -> str:
    source = world.folder / name
    source.write_bytes(data)
    row = world.registry.add_prior(subject, "lora", "tiny-sd", source)
    store_prior_file(world.registry, row, source)
    return row.id


def _same_file(world: TwoSubjects, first: str, data: bytes) -> None:
    _register(world, world.other, "bob.safetensors", data)


def _same_file_by_digest(world: TwoSubjects, first: str, data: bytes) -> None:
    row = world.registry.list_priors(world.owner)[0]
    world.registry.add_prior(world.other, "lora", "sd15", sha256=row.sha256, size=row.size)


def _same_file_other_kind(world: TwoSubjects, first: str, data: bytes) -> None:
    source = world.folder / "as-ti.safetensors"
    source.write_bytes(data)
    world.registry.add_prior(world.other, "textual_inversion", "sd15", source)


@pytest.mark.attack("one prior file registered for two subjects")
@pytest.mark.parametrize(
    "second",
    [_same_file, _same_file_by_digest, _same_file_other_kind],
    ids=["same-bytes-new-name", "same-sha256-no-file", "same-bytes-other-kind"],
)
def test_a_prior_sha256_belongs_to_one_subject(
    world: TwoSubjects, second: Callable[[TwoSubjects, str, bytes], None]
) -> None:
    data = _weights()
    first = _register(world, world.owner, "alice.safetensors", data)
    logged = world.registry.log_size()
    with pytest.raises(PriorOwnerError) as refused:
        second(world, first, data)
    message = str(refused.value)
    assert first in message and "Alice" not in message and world.owner not in message
    assert world.registry.log_size() == logged  # nothing logged
    assert [p.id for p in world.registry.list_priors()] == [first]

    # Bob's grant naming those bytes still does not release Alice's prior ...
    sha = world.registry.list_priors(world.owner)[0].sha256
    world.registry.grant(world.other, "Studio", ["generate"], priors=[sha])
    job = CheckRequest("Studio", "generate", [], "a portrait", first)
    assert not world.gateway.check(job).allowed
    # ... Alice's grant does (the honest prior with its subject's grant runs) ...
    world.registry.grant(world.owner, "Studio", ["generate"], priors=[sha])
    allowed = world.gateway.check(job)
    assert allowed.allowed, allowed.reasons
    # ... and Alice may register her own file again; Bob's different file is his.
    _register(world, world.owner, "alice-again.safetensors", data)
    _register(world, world.other, "bob-own.safetensors", _weights(seed=1))


def _header(value: object) -> bytes:
    raw = json.dumps(value).encode()
    return struct.pack("<Q", len(raw)) + raw


_F32 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BAD_FILES: dict[str, bytes] = {
    "pickle-renamed": pickle.dumps({"state_dict": {"w": [0.0] * 8}}, protocol=4),
    "garbage": b"this is not a tensor file at all, only words" * 4,
    "empty": b"",
    "shorter-than-8-bytes": b"\x10\x00\x00",
    "truncated": _weights()[:-7],
    "header-past-the-end": struct.pack("<Q", 4096) + b'{"a": 1}',
    "oversized-header-length": struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}" + b" " * 64,
    "huge-header-length": struct.pack("<Q", 2**63) + b"{}",
    "header-not-json": struct.pack("<Q", 9) + b"{not json",
    "header-not-an-object": _header([1, 2, 3]) + b"\0" * 16,
    "duplicate-tensor-name": (
        struct.pack("<Q", 2 * len(json.dumps({"w": _F32})) + 1)
        + (json.dumps({"w": _F32})[:-1] + ", " + json.dumps({"w": _F32})[1:]).encode()
        + b"\0" * 16
    ),
    "shape-disagrees-with-offsets": _header({"w": {**_F32, "shape": [3, 2]}}) + b"\0" * 16,
    "gap-between-tensors": _header(
        {"a": {**_F32, "data_offsets": [0, 16]}, "b": {**_F32, "data_offsets": [20, 36]}}
    )
    + b"\0" * 36,
    "overlapping-tensors": _header(
        {"a": {**_F32, "data_offsets": [0, 16]}, "b": {**_F32, "data_offsets": [8, 24]}}
    )
    + b"\0" * 24,
    "trailing-bytes": _weights() + b"hidden payload",
    "unknown-dtype": _header({"w": {**_F32, "dtype": "PICKLE"}}) + b"\0" * 16,
    "no-tensors": _header({"__metadata__": {"format": "pt"}}),
    "negative-offset": _header({"w": {**_F32, "data_offsets": [-16, 0]}}) + b"\0" * 16,
}


@pytest.mark.attack("a weights prior that is not a safetensors file")
@pytest.mark.parametrize("variant", sorted(BAD_FILES))
def test_only_well_formed_safetensors_are_registered(world: TwoSubjects, variant: str) -> None:
    source = world.folder / "prior.safetensors"
    source.write_bytes(BAD_FILES[variant])
    logged = world.registry.log_size()
    with pytest.raises(PriorFileError, match="not a valid safetensors file"):
        world.registry.add_prior(world.owner, "lora", "tiny-sd", source)
    assert world.registry.log_size() == logged and not world.registry.list_priors()
    assert not (world.registry.home.root / "priors").exists()

    honest = _register(world, world.owner, "honest.safetensors", _weights())
    sha = world.registry.list_priors(world.owner)[0].sha256
    assert prior_store_path(world.registry, sha).read_bytes() == _weights()
    world.registry.grant(world.owner, "Studio", ["generate"], priors=[sha])
    allowed = world.gateway.check(CheckRequest("Studio", "generate", [], "a portrait", honest))
    assert allowed.allowed, allowed.reasons


@pytest.mark.attack("a file swapped after registration is stored")
def test_the_store_keeps_only_the_registered_bytes(world: TwoSubjects) -> None:
    source = world.folder / "lora.safetensors"
    source.write_bytes(_weights())
    row = world.registry.add_prior(world.owner, "lora", "tiny-sd", source)
    source.write_bytes(pickle.dumps({"evil": True}))  # swapped between hash and copy
    with pytest.raises(Exception, match="registry recorded"):
        store_prior_file(world.registry, row, source)
    assert not prior_store_path(world.registry, row.sha256).exists()
    source.write_bytes(_weights())
    assert store_prior_file(world.registry, row, source).read_bytes() == _weights()


@pytest.mark.attack("prior add of a pickle or a second subject's file (CLI)")
def test_prior_add_cli_refuses_pickles_and_foreign_files(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("subject", "add", "Alice Example")
    cli.ok("subject", "add", "Bob Example")
    weights = tmp_path / "lora.safetensors"
    weights.write_bytes(_weights())
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"w": 1}))
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(pickle.dumps({"w": 1}))
    for bad in (ckpt, disguised):
        refused = cli("prior", "add", "Alice Example", str(bad), "--kind", "lora")
        assert refused.code == 2, (bad, refused.err)
        assert "pickle" in refused.err or "not a valid safetensors" in refused.err
    first = cli.ok("prior", "add", "Alice Example", str(weights), "--kind", "lora").strip()
    assert first.startswith("pri_")
    again = cli("prior", "add", "Bob Example", str(weights), "--kind", "lora")
    assert again.code == 1 and first in again.err and "Alice" not in again.err, again.err
    listed = cli.json("prior", "list")
    assert isinstance(listed, list) and [p["id"] for p in listed] == [first]


@pytest.mark.attack("two subjects register one prior file at once")
def test_concurrent_registrations_of_one_file_leave_one_owner(world: TwoSubjects) -> None:
    data = _weights(seed=7)
    sources = {}
    for subject in (world.owner, world.other):
        sources[subject] = world.folder / f"{subject}.safetensors"
        sources[subject].write_bytes(data)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def register(subject: str) -> None:
        barrier.wait()
        try:
            world.registry.add_prior(subject, "lora", "tiny-sd", sources[subject])
            outcomes[subject] = "registered"
        except PriorOwnerError:
            outcomes[subject] = "refused"

    threads = [threading.Thread(target=register, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes.values()) == ["refused", "registered"], outcomes
    owners = {p.subject_id for p in world.registry.list_priors()}
    assert len(owners) == 1 and world.registry.verify_log().ok
    # the honest owner's own grant releases it
    (owner,) = owners
    prior = world.registry.list_priors(owner)[0]
    world.registry.grant(owner, "Studio", ["generate"], priors=[prior.sha256])
    store_prior_file(world.registry, prior, sources[owner])
    allowed = world.gateway.check(CheckRequest("Studio", "generate", [], "a portrait", prior.id))
    assert allowed.allowed, allowed.reasons
