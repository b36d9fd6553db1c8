"""Stateful test of the gateway: every decision equals a replay of the log.

Hypothesis drives a random sequence of grants (active, open-ended, expired or
not yet valid), revocations, enrollments (the shipped photos of Obama, Biden
and Eileen Collins, embedded by the real SFace engine), erasures, clock
advances, gateway and registry restarts, and jobs (``Gateway.check``, lenient
or refusing unknown faces, on a random subset of the photos and a prompt that
may name a subject by an alias) against a real SQLite registry in a temporary
folder. Nothing is mocked.

The invariant: the decision the gateway logs for a job is the decision an
independent replay of the signed log prefix before it gives. The oracle reads
only the log leaves (the signed statements in ``log_entries``), the job it was
given (photos and prompt, which the log holds only as hashes) and the ground
truth of who is in each photo; it never looks at the gateway, the policy or
the registry's rows. From the log prefix before the decision's index it
rebuilds which subjects are enrolled and not erased (and whose photos they
enrolled), the subjects' names and aliases, the grants with their windows, and
the revocations; it then computes who is involved (faces in input order, then
prompt mentions in prompt order), which of them no grant covers at the
decision's time, and so whether the job is allowed. That is compared with the
logged decision (allowed flag, subjects, grants used, the subjects its reasons
say lack a grant, unregistered faces, inputs, grantee, purpose) and with the
receipt.

Also checked, whenever the log has grown: ``verify_log`` passes; the log
replayed to its head holds exactly the grants, revocations, enrollments and
erasures the test made (a refused enrollment, erasure or second revocation
logs nothing); every earlier decision still replays to what was logged; and
``grant_valid_at_index`` agrees with the replay for every grant at every
decision.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from PIL import Image
from sqlmodel import col, select

from consentry.errors import DuplicateError, ErasedError
from consentry.faces.engine import FaceEngine
from consentry.faces.engines import get_engine
from consentry.gate import CheckRequest, Gateway, Receipt
from consentry.identity.enroll import enroll_photos
from consentry.registry.biometrics import erase_subject
from consentry.registry.decisions import get_decision, grant_valid_at_index
from consentry.registry.models import LogEntry
from consentry.registry.statements import PURPOSES
from consentry.registry.store import Registry

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
T0 = datetime(2031, 3, 1, 9, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# Ground truth: who is in each shipped photo (one face each).
PHOTO_PERSON: dict[str, str] = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "biden.jpg": "biden",
    "astronaut.jpg": "collins",  # Eileen Collins (scikit-image's astronaut)
}
PHOTOS = tuple(PHOTO_PERSON)
# The jobs and enrollments use copies at most this many pixels on the long side:
# detection costs grow with pixels, and the identities stay clear. With SFace the
# two Obama copies score about 0.74 and every cross-person pair at most 0.29,
# far from the 0.365 threshold, so the labels are what the real engine sees.
PHOTO_SIDE = 640


@functools.cache
def photo_bytes() -> dict[str, bytes]:
    """The shipped photos, downscaled to ``PHOTO_SIDE`` and re-encoded as JPEG."""
    result = {}
    for name in PHOTOS:
        with Image.open(DATA / name) as image:
            small = image.convert("RGB")
            small.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
            buffer = io.BytesIO()
            small.save(buffer, format="JPEG", quality=92)
        result[name] = buffer.getvalue()
    return result


@functools.cache
def photo_sha() -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in photo_bytes().items()}


@functools.cache
def person_of_sha() -> dict[str, str]:
    return {sha: PHOTO_PERSON[name] for name, sha in photo_sha().items()}


# Subjects registered in every run: display name and aliases. Ada has no photo:
# she can only be named in a prompt.
PEOPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "obama": ("Barack Obama", ("Obama",)),
    "biden": ("Joe Biden", ("Biden",)),
    "collins": ("Eileen Collins", ("Collins",)),
    "ada": ("Ada Lovelace", ("Ada",)),
}
GRANTEES = ("Studio North", "Studio South")
UNKNOWN_GRANTEE = "Nobody"

# Prompt vocabulary: names in several casings, and decoys that contain a name
# without being one ("obamacare", "canada") or are only half of one ("Joe").
NAMES = (
    "Obama",
    "BARACK OBAMA",
    "biden",
    "Joe Biden",
    "Eileen Collins",
    "collins",
    "Ada's",
    "Ada Lovelace",
)
DECOYS = (
    "a portrait of",
    "Joe",
    "Eileen",
    "Lovelace",
    "obamacare",
    "bidenomics",
    "canada",
    "Adams",
    "at dusk",
    "in oil paint",
)

_NO_GRANT = re.compile(r"^no active grant for subject (\S+) \(grantee ")
_UNREGISTERED = re.compile(r"^unregistered face in image (\d+) \(refuse_unknown_faces\)$")


def _engine() -> FaceEngine:
    """The process-wide SFace engine (built once, shared by every example)."""
    return get_engine("sface")


class Clock:
    """The registry's clock: set by the test, whole seconds, UTC."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ---------------------------------------------------------------- the oracle
@dataclass(frozen=True)
class Leaf:
    """One log entry as the oracle sees it: index, kind and signed statement."""

    index: int
    kind: str
    statement: dict[str, Any]


@dataclass
class LogState:
    """What a prefix of the log says, rebuilt from its statements alone."""

    subjects: dict[str, list[str]] = field(default_factory=dict)  # id -> names
    subject_order: list[str] = field(default_factory=list)
    grantees: dict[str, str] = field(default_factory=dict)  # name -> id
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> statement
    revoked: set[str] = field(default_factory=set)
    enrolled: dict[str, set[str]] = field(default_factory=dict)  # subject -> people
    erased: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Job:
    """What the test asked of the gateway (the log has only hashes of it)."""

    grantee: str
    purpose: str
    photos: tuple[str, ...]
    prompt: str
    strict: bool


def read_log(registry: Registry) -> list[Leaf]:
    """Every log leaf, decoded from its canonical JSON and base64 payload."""
    with registry.db.read() as session:
        rows = list(session.exec(select(LogEntry).order_by(col(LogEntry.idx))))
    leaves = []
    for row in rows:
        leaf = json.loads(row.leaf_json)
        payload = json.loads(base64.b64decode(leaf["envelope"]["payload"]))
        kind = "operator-key" if row.kind == "key" else row.kind
        assert leaf["kind"] == row.kind and payload["type"] == f"consentry.{kind}"
        leaves.append(Leaf(row.idx, row.kind, payload))
    assert [leaf.index for leaf in leaves] == list(range(len(leaves)))
    return leaves


def replay(leaves: Sequence[Leaf], before: int) -> LogState:
    """The registry's state as the log entries with index < ``before`` say."""
    state = LogState()
    for leaf in leaves[:before]:
        s = leaf.statement
        if leaf.kind == "subject":
            state.subjects[s["id"]] = [s["display_name"], *s["aliases"]]
            state.subject_order.append(s["id"])
        elif leaf.kind == "grantee":
            state.grantees[s["name"]] = s["id"]
        elif leaf.kind == "grant":
            state.grants[s["id"]] = s
        elif leaf.kind == "revocation":
            state.revoked.add(s["grant"])
        elif leaf.kind == "enrollment":
            assert s["subject"] not in state.erased, "an erased subject was enrolled"
            people = {
                person_of_sha()[blob["photo_sha256"]]
                for blob in s["blobs"]
                if blob["kind"] == "embedding"
            }
            state.enrolled.setdefault(s["subject"], set()).update(people)
        elif leaf.kind == "erasure":
            state.erased.add(s["subject"])
            state.enrolled.pop(s["subject"], None)
    return state


def _name_pattern(name: str) -> re.Pattern[str]:
    words = [re.escape(word) for word in name.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def prompt_subjects(state: LogState, prompt: str) -> list[str]:
    """Subjects one of whose names occurs in ``prompt`` as whole words, by first mention."""
    first: dict[str, int] = {}
    for subject, names in state.subjects.items():
        starts = [m.start() for n in names for m in _name_pattern(n).finditer(prompt)]
        if starts:
            first[subject] = min(starts)
    return sorted(first, key=lambda subject: first[subject])


def covering(state: LogState, subject: str, grantee: str, purpose: str, now: str) -> set[str]:
    """The grants that cover ``subject`` for this grantee, purpose and time."""
    return {
        g["id"]
        for g in state.grants.values()
        if g["subject"] == subject
        and g["grantee"] == grantee
        and purpose in g["purposes"]
        and g["id"] not in state.revoked
        and g["not_before"] <= now
        and (g["not_after"] is None or now < g["not_after"])
    }


def check_decision(leaves: Sequence[Leaf], index: int, job: Job) -> bool:
    """Assert the decision at ``index`` is what a replay of the log before it gives.

    Returns the expected allowed flag (for statistics).
    """
    leaf = leaves[index]
    assert leaf.kind == "decision", f"entry {index} is a {leaf.kind}, not a decision"
    logged = leaf.statement
    state = replay(leaves, index)
    grantee = state.grantees[job.grantee]
    now = logged["time"]
    assert logged["grantee"] == grantee and logged["purpose"] == job.purpose
    assert logged["inputs"] == [photo_sha()[p] for p in job.photos]
    assert logged["outputs"] == [] and logged["prior_sha256"] is None

    faces: list[str] = []
    unknown: list[int] = []
    for number, photo in enumerate(job.photos):
        person = PHOTO_PERSON[photo]
        matched = [s for s in state.subject_order if person in state.enrolled.get(s, set())]
        faces += matched
        if not matched:
            unknown.append(number)
    involved = list(dict.fromkeys(faces + prompt_subjects(state, job.prompt)))
    cover = {s: covering(state, s, grantee, job.purpose, now) for s in involved}
    lacking = {s for s in involved if not cover[s]}
    allowed = not lacking and not (job.strict and unknown)

    context = f"decision at log index {index} for {job}: {logged['reasons']}"
    assert isinstance(logged["allowed"], bool) and logged["allowed"] == allowed, context
    assert logged["subjects"] == involved, context
    said_lacking = {m.group(1) for r in logged["reasons"] if (m := _NO_GRANT.match(r))}
    assert said_lacking == lacking, context
    said_unknown = [int(m.group(1)) for r in logged["reasons"] if (m := _UNREGISTERED.match(r))]
    assert said_unknown == (unknown if job.strict else []), context
    # one covering grant per covered subject, no other grant
    used = logged["grants"]
    assert len(used) == len(set(used)), context
    covered_by = {g: state.grants[g]["subject"] for g in used if g in state.grants}
    assert len(covered_by) == len(used), f"a used grant is not in the log before it: {context}"
    assert sorted(covered_by.values()) == sorted(s for s in involved if cover[s]), context
    assert all(g in cover[s] for g, s in covered_by.items()), context
    return allowed


# ---------------------------------------------------------------- the machine
GRANT_SPECS = st.tuples(
    st.sampled_from(tuple(PEOPLE)),
    st.sampled_from(GRANTEES),
    st.sets(st.sampled_from(PURPOSES), min_size=1),
    # active and open-ended twice as likely as the others
    st.sampled_from(
        ("active", "open-ended", "active", "open-ended", "expired", "future", "future-bounded")
    ),
)


class GatewayMachine(RuleBasedStateMachine):
    """Random registry histories and jobs; the oracle replays the log after each job."""

    # set by the test: where runs go, the downscaled photos, the starting registry
    workdir: Path | None = None
    photo_dir: Path | None = None
    template: Path | None = None
    grants = Bundle("grants")

    def __init__(self) -> None:
        super().__init__()
        workdir, photos, template = self.workdir, self.photo_dir, self.template
        assert workdir and photos and template, "run it through the test below"
        self.photos = photos
        self.root = Path(tempfile.mkdtemp(prefix="gateway-", dir=workdir))
        shutil.copytree(template, self.root, dirs_exist_ok=True)
        self.url = sqlite_url(self.root)
        self.clock = Clock(T0)
        # each example restores the same template log: a witness folder of its own, or
        # the second example would be (rightly) refused as a rollback of the first
        self.registry = Registry.open(
            self.root / "home", self.url, clock=self.clock, witness_dir=self.root / "witness"
        )
        self.engine = _engine()
        subjects = {s.display_name: s.id for s in self.registry.list_subjects()}
        self.ids = {person: subjects[name] for person, (name, _) in PEOPLE.items()}
        self.gateways = self._gateways()
        # the model: what the test did, to compare with what the log says
        self.model_grants: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self.model_revoked: set[str] = set()
        self.model_enrolled: dict[str, set[str]] = {}
        self.model_erased: set[str] = set()
        self.jobs: list[tuple[int, Job]] = []
        self.checked_size = -1  # the log size the invariants last checked
        self.jobs_checked = -1
        self.validity_checked: set[tuple[str, int]] = set()  # (grant, decision index)

    def _gateways(self) -> dict[bool, Gateway]:
        return {
            strict: Gateway(self.registry, self.engine, refuse_unknown_faces=strict)
            for strict in (False, True)
        }

    def _grant(self, person: str, grantee: str, purposes: set[str], window: str) -> str:
        now = self.clock.now
        start, end = {
            "active": (now - HOUR, now + DAY),
            "open-ended": (None, None),
            "expired": (now - 3 * DAY, now - DAY),
            "future": (now + DAY, None),
            "future-bounded": (now + 12 * HOUR, now + 2 * DAY),
        }[window]
        grant = self.registry.grant(
            self.ids[person], grantee, sorted(purposes), not_before=start, not_after=end
        )
        self.model_grants[grant.id] = (person, grantee, tuple(sorted(purposes)))
        event(f"grant: {window}")
        return grant.id

    def _enroll(self, photo: str) -> None:
        person = PHOTO_PERSON[photo]
        subject = self.ids[person]
        if subject in self.model_erased:
            size = self.registry.log_size()
            with pytest.raises(ErasedError):
                enroll_photos(self.registry, self.engine, subject, [self.photos / photo])
            assert self.registry.log_size() == size
            return
        enroll_photos(self.registry, self.engine, subject, [self.photos / photo])
        self.model_enrolled.setdefault(subject, set()).add(person)

    def _probe(self, grant: str, purpose: int, variant: str = "own") -> None:
        """A prompt-only job (cheap: no face) naming the subject of ``grant``, for its
        grantee and one of its purposes (``own``), for the other grantee, or for a
        purpose it does not list: the grant may or may not cover it."""
        person, grantee, purposes = self.model_grants[grant]
        wanted = purposes[purpose % len(purposes)]
        if variant == "other grantee":
            grantee = next(g for g in GRANTEES if g != grantee)
        elif variant == "other purpose":
            wanted = next((p for p in PURPOSES if p not in purposes), wanted)
        self._job(Job(grantee, wanted, (), f"{PEOPLE[person][0]} at dusk", False))

    # ------------------------------------------------------------ consent
    @initialize(
        target=grants,
        photos=st.lists(st.sampled_from(PHOTOS), unique=True, max_size=2),
        specs=st.lists(GRANT_SPECS, max_size=3),
        hours=st.sampled_from((0, 12, 24, 48)),
    )
    def seed_history(
        self, photos: list[str], specs: list[tuple[str, str, set[str], str]], hours: int
    ) -> MultipleResults[str]:
        """Start each run with some enrollments and grants already in the log; after
        ``hours``, a job that each grant may cover."""
        for photo in photos:
            self._enroll(photo)
        seeded = [self._grant(*spec) for spec in specs]
        self.clock.now += hours * HOUR
        for number, grant in enumerate(seeded):
            self._probe(grant, number)
        return multiple(*seeded)

    @rule(target=grants, spec=GRANT_SPECS, purpose=st.integers(0, 2))
    def add_grant(self, spec: tuple[str, str, set[str], str], purpose: int) -> str:
        """Add a grant, then at once a job it may cover."""
        grant = self._grant(*spec)
        self._probe(grant, purpose)
        return grant

    @rule(grant=consumes(grants), purpose=st.integers(0, 2))
    def revoke(self, grant: str, purpose: int) -> None:
        """Revoke a grant, then at once a job it would have covered."""
        self.registry.revoke(grant, "consent withdrawn")
        self.model_revoked.add(grant)
        size = self.registry.log_size()
        with pytest.raises(DuplicateError):  # revocation is final: once only
            self.registry.revoke(grant, "again")
        assert self.registry.log_size() == size
        self._probe(grant, purpose)

    @rule(
        hours=st.sampled_from((1, 11, 12, 24, 48)),
        restart=st.sampled_from(("no", "gateways", "registry")),
    )
    def time_passes(self, hours: int, restart: str) -> None:
        """The clock moves on; meanwhile the gateways may have restarted (their
        indexes start from the persisted cache or the log), or the registry too
        (closed and reopened from disk)."""
        self.clock.now += hours * HOUR
        if restart == "registry":
            self.registry.close()
            self.registry = Registry.open(
                self.root / "home", self.url, clock=self.clock, witness_dir=self.root / "witness"
            )
        if restart != "no":
            self.gateways = self._gateways()

    # ------------------------------------------------------------ biometrics
    @rule(photo=st.sampled_from(PHOTOS))
    def enroll(self, photo: str) -> None:
        self._enroll(photo)

    @rule(person=st.sampled_from(tuple(PEOPLE)))
    def erase(self, person: str) -> None:
        subject = self.ids[person]
        if subject in self.model_erased:
            size = self.registry.log_size()
            with pytest.raises(ErasedError):
                erase_subject(self.registry, subject, "again")
            assert self.registry.log_size() == size
            return
        erase_subject(self.registry, subject, "subject asked to be forgotten")
        self.model_erased.add(subject)
        self.model_enrolled.pop(subject, None)

    # ------------------------------------------------------------ jobs
    def _job(self, job: Job) -> None:
        size = self.registry.log_size()
        receipt = self.gateways[job.strict].check(
            CheckRequest(
                job.grantee, job.purpose, [self.photos / p for p in job.photos], job.prompt
            )
        )
        if job.grantee == UNKNOWN_GRANTEE:
            assert not receipt.allowed and receipt.decision_id is None
            assert receipt.log_index is None and self.registry.log_size() == size
            return
        assert receipt.log_index == size, receipt.reasons  # the next entry, and the last
        assert self.registry.log_size() == size + 1
        allowed = check_decision(read_log(self.registry), size, job)
        self._check_receipt(receipt, size)
        self.jobs.append((size, job))
        event(f"job: {'allowed' if allowed else 'refused'}")

    def _check_receipt(self, receipt: Receipt, index: int) -> None:
        row = get_decision(self.registry, receipt.decision_id or "")
        assert row.log_index == index and receipt.allowed is row.allowed
        assert list(receipt.grants) == row.grants
        assert list(receipt.subjects) == row.subjects
        assert list(receipt.reasons) == json.loads(row.reasons_json)

    @rule(
        grantee=st.sampled_from((*GRANTEES, UNKNOWN_GRANTEE)),
        purpose=st.sampled_from(PURPOSES),
        photos=st.lists(st.sampled_from(PHOTOS), max_size=3, unique=True),
        words=st.lists(st.sampled_from(DECOYS), max_size=3),
        names=st.lists(st.sampled_from(NAMES), max_size=2),
        strict=st.booleans(),
    )
    def job(
        self,
        grantee: str,
        purpose: str,
        photos: list[str],
        words: list[str],
        names: list[str],
        strict: bool,
    ) -> None:
        prompt = " ".join([*words[:1], *names, *words[1:]])
        self._job(Job(grantee, purpose, tuple(photos), prompt, strict))

    @precondition(lambda self: self.model_grants)
    @rule(
        grant=st.integers(0, 15),
        purpose=st.integers(0, 2),
        photo=st.integers(0, 1),
        by_name=st.booleans(),
        by_alias=st.booleans(),
        strict=st.booleans(),
    )
    def job_a_grant_may_cover(
        self, grant: int, purpose: int, photo: int, by_name: bool, by_alias: bool, strict: bool
    ) -> None:
        """A job for the grantee and a purpose of a grant, showing or naming its subject."""
        grant_ids = sorted(self.model_grants)
        person, grantee, purposes = self.model_grants[grant_ids[grant % len(grant_ids)]]
        if self.ids[person] not in self.model_enrolled:
            by_name = True  # a photo of someone not enrolled involves nobody
        photos = tuple(p for p in PHOTOS if PHOTO_PERSON[p] == person)
        shown = (photos[photo % len(photos)],) if not by_name else ()
        name = PEOPLE[person][1][0] if by_alias else PEOPLE[person][0]
        prompt = f"a portrait of {name}" if by_name else ""
        self._job(Job(grantee, purposes[purpose % len(purposes)], shown, prompt, strict))

    @precondition(lambda self: self.model_grants)
    @rule(
        choices=st.lists(
            st.tuples(
                st.integers(0, 2),
                st.sampled_from(("own", "other grantee", "other purpose")),
            ),
            min_size=6,
            max_size=6,
        )
    )
    def jobs_naming_each_granted_subject(self, choices: list[tuple[int, str]]) -> None:
        """For every grant, a job naming its subject (see ``_probe``)."""
        for number, grant in enumerate(sorted(self.model_grants)):
            purpose, variant = choices[number % len(choices)]
            self._probe(grant, purpose, variant)

    # ------------------------------------------------------------ invariants
    @invariant()
    def log_verifies_and_matches_the_model(self) -> None:
        """Checked whenever the log has grown (other steps cannot change it)."""
        size = self.registry.log_size()
        if size == self.checked_size:
            return
        self.checked_size = size
        report = self.registry.verify_log()
        assert report.ok, report.problems
        leaves = read_log(self.registry)
        head = replay(leaves, len(leaves))
        assert set(head.grants) == set(self.model_grants)
        assert head.revoked == self.model_revoked
        assert head.enrolled == self.model_enrolled
        assert head.erased == self.model_erased
        assert [leaf.index for leaf in leaves if leaf.kind == "decision"] == [
            index for index, _ in self.jobs
        ]

    @invariant()
    def every_decision_still_replays(self) -> None:
        """Later entries change no earlier decision; ``grant_valid_at_index`` agrees with
        the replay (asked once for each grant and decision)."""
        if not self.jobs or self.jobs_checked == self.registry.log_size():
            return
        self.jobs_checked = self.registry.log_size()
        leaves = read_log(self.registry)
        grants = replay(leaves, len(leaves)).grants
        for index, job in self.jobs:
            check_decision(leaves, index, job)
            state = replay(leaves, index)
            now = leaves[index].statement["time"]
            for grant_id, grant in grants.items():
                if (grant_id, index) in self.validity_checked:
                    continue  # the replay above shows the log before ``index`` is unchanged
                self.validity_checked.add((grant_id, index))
                valid, why = grant_valid_at_index(self.registry, grant_id, index, now)
                expected = (
                    grant_id in state.grants
                    and grant_id not in state.revoked
                    and grant["not_before"] <= now
                    and (grant["not_after"] is None or now < grant["not_after"])
                )
                assert valid is expected, why

    def teardown(self) -> None:
        try:
            self.registry.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder}/registry.db"


def build_template(folder: Path) -> None:
    """The registry every run starts from (copied, not rebuilt, for speed): the
    genesis key, the subjects of ``PEOPLE`` and the ``GRANTEES``, at ``T0``."""
    with Registry.init(folder / "home", sqlite_url(folder), clock=Clock(T0)) as registry:
        for name, aliases in PEOPLE.values():
            registry.add_subject(name, aliases)
        for grantee in GRANTEES:
            registry.add_grantee(grantee)


def test_every_decision_equals_a_replay_of_the_log(tmp_path: Path) -> None:
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir()
    for name, data in photo_bytes().items():
        (photo_dir / name).write_bytes(data)
    template = tmp_path / "template"
    template.mkdir()
    build_template(template)
    GatewayMachine.workdir = tmp_path
    GatewayMachine.photo_dir = photo_dir
    GatewayMachine.template = template
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        GatewayMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            # no explain phase: re-running every failing step under coverage is slow here
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )
