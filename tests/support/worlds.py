"""Registries the tests stand on: a new home with named subjects (enrolled from the
shipped photos when a photo is named), the gateway over it, and the two-subject
world the prior attacks share. Real SQLite or PostgreSQL, real signatures, the
real sface engine.

A module's own ``World`` keeps what only it needs (a live server, a prior, keys
by role) and builds its registry here, so the register / enroll / sign-up steps
exist once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from consentry.faces.engines import get_engine
from consentry.gate import Gateway
from consentry.identity.enroll import enroll_photos
from consentry.provenance.certs import create_dev_pki
from consentry.registry.store import Registry
from tests.support.faces import PHOTOS

__all__ = [
    "BIDEN",
    "OBAMA",
    "Person",
    "TwoSubjects",
    "new_registry",
    "sface_gateway",
    "two_subjects",
]


@dataclass(frozen=True)
class Person:
    """A subject to register: display name, aliases, and the shipped photo (a file
    in ``PHOTOS``) to enroll, or None for a subject with no face enrolled."""

    name: str
    aliases: tuple[str, ...] = ()
    photo: str | None = None


OBAMA = Person("Barack Obama", ("Obama",), "obama.jpg")
BIDEN = Person("Joe Biden", ("Biden",), "biden.jpg")


def new_registry(
    home: Path,
    db_url: str | None,
    people: Iterable[Person | str] = (),
    *,
    keep_photos: bool = False,
    pki: bool = False,
) -> tuple[Registry, list[str]]:
    """A registry made by ``Registry.init`` at ``home`` with ``people`` registered in
    order (a plain string: a name with no aliases and no photo); each one with a
    photo is enrolled from it by the sface engine (``keep_photos``: its encrypted
    copy is kept, as exemplar priors and training need). ``pki``: a development
    signing PKI in the home, for jobs that sign their outputs. Returns the registry
    and the subject ids, in the order of ``people``."""
    registry = Registry.init(home, db_url)
    if pki:
        create_dev_pki(registry.home.root)
    ids = []
    for entry in people:
        person = Person(entry) if isinstance(entry, str) else entry
        subject = registry.add_subject(person.name, list(person.aliases))
        if person.photo is not None:
            enroll_photos(
                registry,
                get_engine("sface"),
                subject.id,
                [PHOTOS / person.photo],
                keep_photos=keep_photos,
            )
        ids.append(subject.id)
    return registry, ids


def sface_gateway(registry: Registry) -> Gateway:
    """The gateway over ``registry`` with the sface engine (shared, loaded once)."""
    return Gateway(registry, get_engine("sface"))


@dataclass
class TwoSubjects:
    """Two name-only subjects, ``owner`` (whose prior a test registers) and
    ``other``, the grantee "Studio" with no grant yet, the gateway, and a folder
    for the test's files."""

    registry: Registry
    gateway: Gateway
    owner: str
    other: str
    folder: Path


def two_subjects(folder: Path, db_url: str, owner: str, other: str) -> Iterator[TwoSubjects]:
    """A :class:`TwoSubjects` under ``folder`` (its home is ``folder / "home"``),
    for a fixture to yield from; the registry is closed after the test."""
    registry, (owner_id, other_id) = new_registry(folder / "home", db_url, [owner, other])
    registry.add_grantee("Studio")
    try:
        yield TwoSubjects(registry, sface_gateway(registry), owner_id, other_id, folder)
    finally:
        registry.close()
