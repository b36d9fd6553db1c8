"""Data for ``python -m bench gateway``: a registry of 1,000 subjects and a job mix.

How the 1,000 subjects are made (see :func:`build_world`):

- **Real identities, real photos.** With ``../shared/faces`` present (126 photos of
  34 people, ``MANIFEST.tsv``), every identity with at least two photos is
  registered: one single-face photo is held out as its *probe* (the photo the
  load clients send), every other photo is embedded by the ``sface`` engine
  (YuNet + SFace; in a group photo the detected face with the highest IoU to the
  labelled box, as in ``bench faces``) and stored with
  ``consentry.registry.biometrics.enroll`` (the function ``enroll_photos`` ends
  in, without its quality gates, which refuse group photos). Identities with one
  photo, and the shipped ``astronaut.jpg``, stay *unregistered* faces. Without
  ``shared/faces`` only the four shipped photos are used: Obama (enrolled from
  ``obama.jpg``, probe ``obama2.jpg``), Biden (enrolled from ``biden.jpg``; his
  probe is the same photo mirrored, scaled to 80% and re-encoded, the one
  augmented probe) and the astronaut unregistered.
- **Filler subjects, synthetic embeddings.** The rest, up to 1,000, are
  registered with ``Registry.add_subject`` (a name and a one-word alias) and
  enrolled through the same ``biometrics.enroll`` with three embeddings each,
  drawn from a two-level Gaussian fitted to the real SFace embeddings (identity
  centre ~ N(mean, between-identity covariance), sample = centre + N(0,
  within-identity covariance), both shrunk towards a multiple of the identity,
  the within noise scaled so that the genuine mean cosine matches the real one,
  then L2-normalised; isotropic centres when fewer than 10 real identities are
  available). Augmented real photos cannot make new people: a face recognizer
  is built to see the same person through blur, crops and flips (``bench
  faces`` table 2), so augmented copies would be the same few people registered
  many times, every probe would match dozens of subjects, and there would be no
  1,000 identities. Before them come **real strangers**: every stranger face
  of ``bench.faces_1n_data`` that is not sent (the unlabelled faces of the
  multi-face photos of the faces folder, faces in installed packages' images),
  each a subject of its own with its one real embedding.
- **Nothing is screened by score** (issue 14: screened fillers hid the 1:N
  false matches). Fillers are not redrawn near a sent face, and a probe or an
  unregistered photo is not dropped for resembling another subject; the only
  test on a probe is the genuine one (a single-face photo at least ``threshold +
  margin`` from its own identity's other photos). So a sent face may match a
  look-alike: :func:`lookalikes` counts, with plain numpy, the sent photos that
  match another real identity, a stranger or a synthetic filler, and the load
  phases show those as wrong refusals (the ground truth stays the label).

Grants: grantee "Studio A" holds one grant (``restore`` + ``generate``, no end)
for every other real identity with a probe and for every other filler;
"Studio B" holds none.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.gateway_fillers import (
    FILLER_VECTORS,
    SHRINK,
    FillerModel,
    impostor_share,
    pair_stats,
)
from bench.gateway_lookalikes import lookalikes, strangers
from consentry.faces.engine import FaceEngine
from consentry.faces.images import load_image
from consentry.faces.thresholds import DEFAULT_THRESHOLDS
from consentry.identity.enroll import engine_info
from consentry.provenance.certs import create_dev_pki
from consentry.registry.biometrics import Sample, enroll
from consentry.registry.store import Registry

Box = tuple[float, float, float, float]  # x, y, w, h

SUBJECTS_TOTAL = 1000
MARGIN = 0.05  # genuine margin: a probe is at least threshold + MARGIN from its own photos
MIN_IOU = 0.3
MIN_FIT_IDENTITIES = 10  # fewer real identities: isotropic filler centres
FALLBACK_GENUINE = 0.70  # sface genuine mean cosine (DESIGN.md section 5)
PURPOSES = ["generate", "restore"]
CHECK_PURPOSE = "restore"
PROMPT_TEMPLATE = "a portrait photo of {name}, studio light"
UNREGISTERED_SHIPPED = ("astronaut",)
SHIPPED = Path(__file__).resolve().parent.parent / "consentry" / "data" / "faces"

_FIRST = (
    "Ada", "Bela", "Cora", "Dario", "Edda", "Felix", "Greta", "Hugo", "Ines", "Jonas",
    "Kira", "Lior", "Mara", "Nils", "Olga", "Pavel", "Quinn", "Rhea", "Sven", "Tara",
    "Ugo", "Vera", "Wim", "Xenia", "Yusuf", "Zora", "Anouk", "Bruno", "Clio", "Dane",
    "Elif", "Finn", "Gaia", "Hana", "Ivo", "Jana", "Kofi", "Lena", "Milo", "Noor",
)  # fmt: skip
_LAST = (
    "Abara", "Brandt", "Castell", "Dorsey", "Eklund", "Fairweather", "Galloway", "Hartmann",
    "Iversen", "Jovanovic", "Kessler", "Lindqvist", "Moreau", "Nakamura", "Okafor",
    "Pellegrini", "Quist", "Rasmussen", "Santoro", "Takahashi", "Underhill", "Valdez",
    "Whitcombe", "Xiong", "Yilmaz", "Zeller", "Achterberg", "Beaumont", "Cardoso", "Delacroix",
)  # fmt: skip


# ---------------------------------------------------------------- photos
@dataclass(frozen=True)
class FacePhoto:
    """One real photo: its file bytes (sent as is), label and labelled face box."""

    name: str  # manifest path, or the shipped file name
    identity: str
    data: bytes
    labelled: Box | None  # None: the largest detected face is the labelled one
    n_faces: int  # faces in the photo per the manifest (1 for shipped photos)


@dataclass
class Embedded:
    """The engine's view of a photo: the labelled face's vector and every face's."""

    photo: FacePhoto
    vector: np.ndarray | None  # the labelled face (None: not found)
    faces: list[np.ndarray]  # every detected face, labelled one included


def default_faces_dir() -> Path:
    """``shared/faces`` beside the repository (``<repo>/../shared/faces``)."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "faces"


def _read_manifest(folder: Path) -> list[FacePhoto]:
    with (folder / "MANIFEST.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    photos = []
    for row in rows:
        x, y, w, h = (float(v) for v in row["bbox"].split(","))
        photos.append(FacePhoto(row["path"], row["identity"], (folder / row["path"]).read_bytes(),
                                (x, y, w, h), int(row["n_faces"] or 1)))
    return photos


def _shipped() -> list[FacePhoto]:
    names = {"obama.jpg": "obama", "obama2.jpg": "obama", "biden.jpg": "biden",
             "astronaut.jpg": "astronaut"}
    return [FacePhoto(f"shipped/{n}", who, (SHIPPED / n).read_bytes(), None, 1)
            for n, who in names.items()]


def augmented_probe(photo: FacePhoto) -> FacePhoto:
    """``photo`` mirrored, scaled to 80% (Lanczos) and re-encoded as JPEG q90."""
    image = Image.open(io.BytesIO(photo.data)).convert("RGB")
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((round(image.width * 0.8), round(image.height * 0.8)),
                         Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return FacePhoto(photo.name + " (mirrored, 80%, q90)", photo.identity, buffer.getvalue(),
                     None, 1)


def landscape_jpeg(index: int, side: int = 768) -> bytes:
    """A face-free generated landscape (``bench.provenance_data.landscape``) as JPEG q90."""
    from bench.provenance_data import landscape

    buffer = io.BytesIO()
    Image.fromarray(landscape(index, side)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def embed(engine: FaceEngine, photo: FacePhoto) -> Embedded:
    """Detect and embed every face of ``photo``; pick the labelled one."""
    pixels = load_image(photo.data).pixels
    faces = [f for f in engine.analyze(pixels) if f.embedding is not None]
    vectors = [np.asarray(f.embedding, dtype=np.float32) for f in faces]
    vectors = [v / float(np.linalg.norm(v)) for v in vectors]
    chosen: np.ndarray | None = None
    if faces and photo.labelled is None:
        chosen = vectors[0]  # detect returns the largest face first
    elif faces and photo.labelled is not None:
        scores = [_iou(tuple(float(c) for c in f.bbox), photo.labelled)  # type: ignore[arg-type]
                  for f in faces]
        best = int(np.argmax(scores))
        if scores[best] >= MIN_IOU:
            chosen = vectors[best]
    return Embedded(photo, chosen, vectors)


# ---------------------------------------------------------------- the world
@dataclass(frozen=True)
class Job:
    """One check request with its ground truth."""

    kind: str
    key: str  # "A" or "B"
    image: bytes | None
    image_name: str
    prompt: str
    expected_allowed: bool
    expected_subjects: frozenset[str]


@dataclass
class World:
    """The registry home, its keys and subjects, the jobs and how they were made."""

    home: Path
    keys: dict[str, str]  # "A"/"B" -> API key
    grantee_ids: dict[str, str]
    jobs: list[Job]
    kinds: dict[str, str]  # kind -> description
    subjects_total: int
    real_registered: int
    real_with_probe: int
    fillers: int
    granted_subjects: int
    grants: int
    unregistered_photos: int
    source: str
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    granted_probe: FacePhoto | None = None  # a probe of a granted real subject
    granted_name: str = ""  # its subject's display name
    granted_filler_name: str = ""
    granted_probes: list[FacePhoto] = field(default_factory=list)  # no look-alike first


def _names(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    combos = [(f, last) for f in _FIRST for last in _LAST]
    if count > len(combos):
        raise ValueError(f"only {len(combos)} distinct filler names")
    order = rng.permutation(len(combos))[:count]
    return [(f"{combos[i][0]} {combos[i][1]}", f"{combos[i][0]}_{combos[i][1]}".lower())
            for i in order]


def build_world(home: Path, engine: FaceEngine, faces_dir: Path | None, seed: int = 7,
                log: Any = print) -> World:
    """Create the registry at ``home`` (SQLite in the home) and the job mix; see the module."""
    rng = np.random.default_rng(seed)
    threshold = DEFAULT_THRESHOLDS[engine.name]
    notes: list[str] = []
    stats: dict[str, Any] = {"threshold": threshold, "margin": MARGIN}

    folder = faces_dir if faces_dir is not None else default_faces_dir()
    photos, source, use_shared = _photos(folder)
    began = time.perf_counter()
    embedded = [embed(engine, p) for p in photos]
    stats["embed_seconds"] = time.perf_counter() - began
    stats["photos_embedded"] = len(embedded)
    log(f"  embedded {len(embedded)} real photos in {stats['embed_seconds']:.1f} s")

    cast = _cast(engine, embedded, use_shared, threshold, notes)
    fillers = _fillers(engine, cast, threshold, rng, notes, stats, folder if use_shared else None)
    setup = _registry(home, engine, cast, fillers, rng, stats, log)
    jobs, kinds = _job_mix(cast, setup, rng)
    # Table 2 times an allowed job: its probe is one that matches no look-alike, if any.
    clean = [p for p in setup.granted_probes
             if p.photo.name not in set(stats["lookalikes"]["matched"])]
    if not clean:
        notes.append("every granted probe matches a look-alike: table 2's jobs are refused")
    first_granted = (clean or setup.granted_probes)[0]
    return World(
        home=home,
        keys=setup.keys,
        grantee_ids=setup.grantee_ids,
        jobs=jobs,
        kinds=kinds,
        subjects_total=len(cast.registered_ids) + len(fillers),
        real_registered=len(cast.registered_ids),
        real_with_probe=len(cast.probes),
        fillers=len(fillers),
        granted_subjects=len(setup.granted_real) + len(setup.granted_fillers),
        grants=setup.grants,
        unregistered_photos=len(cast.unregistered),
        source=source,
        notes=notes,
        stats=stats,
        granted_probe=first_granted.photo,
        granted_name=first_granted.photo.identity,
        granted_filler_name=setup.granted_fillers[0][1],
        granted_probes=[p.photo for p in clean + [q for q in setup.granted_probes
                                                  if q not in clean]],
    )


def _photos(folder: Path) -> tuple[list[FacePhoto], str, bool]:
    """The real photos (shared/faces with its manifest, else the shipped four), a line
    naming their source, and whether shared/faces is used."""
    use_shared = (folder / "MANIFEST.tsv").is_file()
    shipped = _shipped()
    if use_shared:
        photos = _read_manifest(folder) + [p for p in shipped
                                           if p.identity in UNREGISTERED_SHIPPED]
        return photos, f"{folder} ({len(photos) - 1} photos) + shipped astronaut.jpg", True
    return shipped, f"{SHIPPED} only (no {folder}): 4 public-domain photos", False


@dataclass
class _Cast:
    """Who plays which part: per registered identity its enrolled photos and (for most)
    a probe sent to the gate; the unregistered photos sent; everyone's real embeddings."""

    by_identity: dict[str, list[Embedded]]
    registered_ids: list[str]
    probes: dict[str, Embedded]
    enrolled: dict[str, list[Embedded]]
    unregistered: list[Embedded]


def _cast(engine: FaceEngine, embedded: list[Embedded], use_shared: bool, threshold: float,
          notes: list[str]) -> _Cast:
    """Split the real photos into enrolled photos, probes and unregistered photos."""
    high = threshold + MARGIN
    by_identity: dict[str, list[Embedded]] = {}
    for e in embedded:
        by_identity.setdefault(e.photo.identity, []).append(e)
    unregistered_ids = sorted(i for i, es in by_identity.items()
                              if i in UNREGISTERED_SHIPPED or (use_shared and len(es) < 2))
    registered_ids = sorted(i for i in by_identity if i not in unregistered_ids)

    # Probes: per identity, the last single-face photo whose face is near its own identity's
    # other photos (>= threshold + margin); what it resembles otherwise is not looked at.
    probes: dict[str, Embedded] = {}
    enrolled: dict[str, list[Embedded]] = {}
    for identity in registered_ids:
        members = [e for e in by_identity[identity] if e.vector is not None]
        probe = _probe(engine, members, high)
        if probe is not None:
            probes[identity] = probe
        enrolled[identity] = [e for e in members if e is not probe]
    unregistered = [e for identity in unregistered_ids for e in by_identity[identity]
                    if _usable_unregistered(e, notes)]
    missing = [i for i in registered_ids if i not in probes]
    if missing:
        notes.append(f"registered but never sent (no single-face photo passes the probe "
                     f"screen): {', '.join(missing)}")
    return _Cast(by_identity, registered_ids, probes, enrolled, unregistered)


def _probe(engine: FaceEngine, members: list[Embedded], high: float) -> Embedded | None:
    """The probe of one identity (see :func:`_cast`), or None. With one photo
    (shipped-only mode) the probe is an augmented copy of it, and the photo stays enrolled."""

    if len(members) == 1:  # shipped-only mode: the one augmented probe
        probe = embed(engine, augmented_probe(members[0].photo))
        if probe.vector is not None and float(probe.vector @ members[0].vector) >= high:
            return probe
        return None
    for cand in reversed(members):
        if cand.photo.n_faces != 1 or len(cand.faces) != 1 or cand.vector is None:
            continue
        rest = np.stack([e.vector for e in members if e is not cand])  # type: ignore[misc]
        if float((rest @ cand.vector).max()) >= high:
            return cand
    return None


def _usable_unregistered(e: Embedded, notes: list[str]) -> bool:
    """An unregistered photo is sent if it has a face (whatever it resembles: unscreened)."""
    if not e.faces:
        notes.append(f"unregistered photo {e.photo.name}: no face found, not used")
        return False
    return True


def _fillers(engine: FaceEngine, cast: _Cast, threshold: float, rng: np.random.Generator,
             notes: list[str], stats: dict[str, Any], folder: Path | None
             ) -> list[np.ndarray]:
    """The filler subjects' embeddings (real strangers, then synthetic); stats in ``stats``.

    First the real strangers (one vector each, :func:`bench.gateway_lookalikes.strangers`),
    then synthetic subjects fitted on the real labelled embeddings, drawn once and kept
    whatever they resemble (no screening against the sent faces)."""
    real_by_identity = {i: [e.vector for e in es if e.vector is not None]
                        for i, es in cast.by_identity.items()}
    real_by_identity = {i: v for i, v in real_by_identity.items() if v}
    real_groups = [np.stack(v) for v in real_by_identity.values()]
    real_genuine, real_impostor = pair_stats(real_groups)
    if len(real_by_identity) >= MIN_FIT_IDENTITIES:
        model = FillerModel.fit(real_by_identity).matched(real_genuine, rng)
    else:
        model = FillerModel.isotropic(engine.dim).matched(FALLBACK_GENUINE, rng)
        notes.append(f"only {len(real_by_identity)} real identities: filler centres are "
                     f"isotropic (uniform on the sphere), within noise matched to a genuine "
                     f"mean cosine of {FALLBACK_GENUINE} (DESIGN.md: two photos of one person "
                     "average 0.70 with sface)")
    sent_faces = np.stack([f for p in cast.probes.values() for f in p.faces]
                          + [f for e in cast.unregistered for f in e.faces])
    real = strangers(engine, folder, stats)
    filler_count = SUBJECTS_TOTAL - len(cast.registered_ids) - len(real)
    synthetic = list(model.draw_many(rng, filler_count, FILLER_VECTORS))
    fillers = real + synthetic
    stats["filler_draws"] = filler_count
    stats["stranger_fillers"] = len(real)
    sent = [(p.photo.name, i, np.stack(p.faces)) for i, p in cast.probes.items()] + [
        (e.photo.name, None, np.stack(e.faces)) for e in cast.unregistered]
    registered = {i: np.stack([e.vector for e in es if e.vector is not None])
                  for i, es in cast.enrolled.items() if es}
    stats["lookalikes"] = lookalikes(sent, registered, real, synthetic, threshold)
    all_real = np.concatenate(real_groups)
    stats["real_pairs_mean_cos"] = {"genuine": real_genuine, "impostor": real_impostor}
    stats["filler_pairs_mean_cos"] = dict(zip(("genuine", "impostor"),
                                              pair_stats(synthetic[:300]), strict=True))
    cross = np.concatenate(fillers) @ all_real.T
    stats["filler_vs_real_mean_cos"] = float(cross.mean())
    stats["filler_vs_real_share_at_threshold"] = float((cross >= threshold).mean())
    stats["real_impostor_share_at_threshold"] = impostor_share(real_groups, threshold)
    stats["filler_vs_sent_max_cos"] = float((np.concatenate(fillers) @ sent_faces.T).max())
    stats["filler_share_at_threshold"] = impostor_share(fillers[:1000], threshold)
    stats["filler_model"] = {"identities": model.identities, "photos": model.photos,
                             "shrinkage": SHRINK, "within_scale": model.within_scale}
    return fillers


@dataclass
class _Setup:
    """What the registry holds after setup: keys, subject ids, who is granted."""

    keys: dict[str, str]
    grantee_ids: dict[str, str]
    subject_of: dict[str, str]  # real identity -> subject id
    granted_real: set[str]
    ungranted_real: list[str]
    granted_fillers: list[tuple[str, str]]  # (subject id, display name)
    ungranted_fillers: list[tuple[str, str]]
    granted_probes: list[Embedded]
    ungranted_probes: list[Embedded]
    grants: int


def _registry(home: Path, engine: FaceEngine, cast: _Cast, fillers: list[np.ndarray],
              rng: np.random.Generator, stats: dict[str, Any], log: Any) -> _Setup:
    """Create the registry: two grantees, every subject enrolled, A's grants, a checkpoint."""
    began = time.perf_counter()
    registry = Registry.init(home, None)
    try:
        create_dev_pki(registry.home.root)
        info = engine_info(engine)
        grantee_a, key_a = registry.add_grantee("Studio A")
        grantee_b, key_b = registry.add_grantee("Studio B")
        subject_of: dict[str, str] = {}
        for identity in cast.registered_ids:
            subject = registry.add_subject(identity)
            subject_of[identity] = subject.id
            enroll(registry, subject.id, info,
                   [Sample(hashlib.sha256(e.photo.data).hexdigest(), e.vector)
                    for e in cast.enrolled[identity] if e.vector is not None])
        filler_ids = _enroll_fillers(registry, info, fillers, rng)
        stats["enroll_seconds"] = time.perf_counter() - began
        log(f"  registered {len(cast.registered_ids)} real + {len(fillers)} filler subjects in "
            f"{stats['enroll_seconds']:.1f} s")

        probed = sorted(cast.probes)
        granted_real = set(probed[0::2])
        granted_fillers = filler_ids[0::2]
        began = time.perf_counter()
        grants = 0
        for subject_id in [subject_of[i] for i in sorted(granted_real)] + [
                s for s, _ in granted_fillers]:
            registry.grant(subject_id, grantee_a.id, PURPOSES)
            grants += 1
        registry.checkpoint()
        stats["grant_seconds"] = time.perf_counter() - began
        stats["log_size_after_setup"] = registry.log_size()
    finally:
        registry.close()
    ungranted_real = [i for i in probed if i not in granted_real]
    return _Setup(
        keys={"A": key_a, "B": key_b},
        grantee_ids={"A": grantee_a.id, "B": grantee_b.id},
        subject_of=subject_of,
        granted_real=granted_real,
        ungranted_real=ungranted_real,
        granted_fillers=granted_fillers,
        ungranted_fillers=filler_ids[1::2],
        granted_probes=[cast.probes[i] for i in sorted(granted_real)],
        ungranted_probes=[cast.probes[i] for i in ungranted_real],
        grants=grants,
    )


def _enroll_fillers(registry: Registry, info: Any, fillers: list[np.ndarray],
                    rng: np.random.Generator) -> list[tuple[str, str]]:
    """Register and enroll each filler under a distinct made-up name (its handle an alias)."""
    filler_ids: list[tuple[str, str]] = []  # (subject id, display name)
    for (name, handle), vectors in zip(_names(len(fillers), rng), fillers, strict=True):
        subject = registry.add_subject(name, [handle])
        label = f"{'stranger' if len(vectors) == 1 else 'synthetic'} embedding of {name}"
        enroll(registry, subject.id, info,
               [Sample(hashlib.sha256(f"{label} #{k}".encode()).hexdigest(), v)
                for k, v in enumerate(vectors)])
        filler_ids.append((subject.id, name))
    return filler_ids


_KINDS = {
    "granted face": "probe of a subject A holds a grant for -> allow",
    "ungranted face": "probe of a registered subject without a grant for A -> refuse",
    "unregistered face": "real photo of an unregistered person -> allow (no subject)",
    "no face": "generated landscape, no prompt -> allow (no subject)",
    "face + prompt alias": "granted probe + prompt naming an ungranted subject -> refuse",
    "prompt alias only": "landscape + prompt naming a granted filler by alias -> allow",
    "other grantee": "granted probe sent with B's key (B holds no grant) -> refuse",
}


def _job_mix(cast: _Cast, setup: _Setup,
             rng: np.random.Generator) -> tuple[list[Job], dict[str, str]]:
    """The job mix: one "round" of kinds, repeated over the probes, then shuffled."""
    landscapes = [(f"landscape-{i}.jpg", landscape_jpeg(i)) for i in range(3)]
    kinds = dict(_KINDS)
    if not setup.granted_probes or not setup.ungranted_probes:
        raise RuntimeError("need at least one granted and one ungranted probed identity")
    jobs: list[Job] = []
    for r in range(max(24, len(cast.probes))):
        jobs += _round(r, cast, setup, landscapes[r % len(landscapes)])
    order = rng.permutation(len(jobs))
    return [jobs[i] for i in order], kinds


def _round(r: int, cast: _Cast, setup: _Setup, landscape: tuple[str, bytes]) -> list[Job]:
    """Round ``r`` of the job mix: every kind of job once (granted and ungranted faces
    three times), each probe and filler chosen by ``r``."""
    subject_of = setup.subject_of
    g = setup.granted_probes[r % len(setup.granted_probes)]
    u = setup.ungranted_probes[r % len(setup.ungranted_probes)]
    gs = frozenset({subject_of[g.photo.identity]})
    us = frozenset({subject_of[u.photo.identity]})
    land_name, land = landscape
    uf_id, uf_name = setup.ungranted_fillers[(7 * r) % len(setup.ungranted_fillers)]
    gf_id, gf_name = setup.granted_fillers[(11 * r) % len(setup.granted_fillers)]
    handle = gf_name.replace(" ", "_").lower() if r % 2 else gf_name
    jobs = [
        Job("granted face", "A", g.photo.data, g.photo.name, "", True, gs),
        Job("granted face", "A", g.photo.data, g.photo.name, "", True, gs),
        Job("granted face", "A", g.photo.data, g.photo.name, "", True, gs),
        Job("ungranted face", "A", u.photo.data, u.photo.name, "", False, us),
        Job("ungranted face", "A", u.photo.data, u.photo.name, "", False, us),
        Job("ungranted face", "A", u.photo.data, u.photo.name, "", False, us),
        Job("no face", "A", land, land_name, "", True, frozenset()),
        Job("face + prompt alias", "A", g.photo.data, g.photo.name,
            PROMPT_TEMPLATE.format(name=uf_name), False, gs | {uf_id}),
        Job("face + prompt alias", "A", g.photo.data, g.photo.name,
            PROMPT_TEMPLATE.format(name=u.photo.identity), False,
            gs | {subject_of[u.photo.identity]}),
        Job("prompt alias only", "A", land, land_name, PROMPT_TEMPLATE.format(name=handle),
            True, frozenset({gf_id})),
        Job("other grantee", "B", g.photo.data, g.photo.name, "", False, gs),
    ]
    if cast.unregistered:
        x = cast.unregistered[r % len(cast.unregistered)]
        jobs.append(Job("unregistered face", "A", x.photo.data, x.photo.name, "", True,
                        frozenset()))
    return jobs


def face_square(photo: FacePhoto, side: int = 512) -> Image.Image:
    """The photo's labelled (or largest) face region grown to a square, resized to ``side``.

    Used as the stand-in pipeline's 512x512 output: a real face of a granted subject.
    """
    image = Image.open(io.BytesIO(photo.data)).convert("RGB")
    if photo.labelled is not None:
        x, y, w, h = photo.labelled
    else:
        x, y, w, h = 0.0, 0.0, float(image.width), float(image.height)
    half = max(w, h) * 1.2
    cx, cy = x + w / 2, y + h / 2
    box = (max(0.0, cx - half), max(0.0, cy - half), min(float(image.width), cx + half),
           min(float(image.height), cy + half))
    return image.crop(tuple(round(v) for v in box)).resize((side, side),  # type: ignore[arg-type]
                                                          Image.Resampling.LANCZOS)
