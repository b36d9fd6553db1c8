"""Release marks: payload coding (exact or None, never a wrong id), the watermark on a
real photo under JPEG and resizing, fingerprint distances, and the logged mark format."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from consentry.errors import InputError
from consentry.provenance import fingerprint as fp
from consentry.provenance import watermark as wm
from consentry.provenance.marks import mark_outputs, soft_bindings
from consentry.registry.decisions import check_marks

DATA = Path(__file__).resolve().parents[2] / "consentry" / "data" / "faces"
IDS = st.binary(min_size=8, max_size=8).map(bytes.hex)


def photo(name: str = "obama.jpg") -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def resize(pixels: np.ndarray, factor: float) -> np.ndarray:
    image = Image.fromarray(pixels)
    size = (round(image.width * factor), round(image.height * factor))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


@given(IDS)
def test_payload_round_trip(release_id: str) -> None:
    assert wm.decode_payload(wm.encode_payload(release_id)) == release_id


@settings(max_examples=300)
@given(IDS, st.sets(st.integers(0, wm.PAYLOAD_BITS - 1), min_size=1, max_size=5))
def test_a_corrupted_payload_is_none_never_another_id(release_id: str, flips: set[int]) -> None:
    bits = wm.encode_payload(release_id).copy()
    bits[list(flips)] ^= 1
    # CRC-32 has Hamming distance 6 at 96 bits: every 1 to 5 flips is detected
    assert wm.decode_payload(bits) is None


def test_random_bits_decode_to_none() -> None:
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 2, (2000, wm.PAYLOAD_BITS)).astype(np.uint8)
    found = [wm.decode_payload(bits) for bits in draws]
    assert found == [None] * 2000


@pytest.mark.parametrize("bad", ["", "abc", "zz" * 8, "00" * 9])
def test_a_bad_release_id_is_an_input_error(bad: str) -> None:
    with pytest.raises(InputError):
        wm.encode_payload(bad)


def test_watermark_survives_jpeg_q75_and_half_size_on_a_real_photo() -> None:
    original = photo()
    marked = wm.embed(original, "0123456789abcdef")
    assert marked.shape == original.shape
    mse = np.mean((marked.astype(float) - original) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 38.0  # PSNR
    assert wm.decode(marked).release_id == "0123456789abcdef"
    assert wm.decode(jpeg(marked, 75)).release_id == "0123456789abcdef"
    assert wm.decode(resize(marked, 0.5)).release_id == "0123456789abcdef"


def test_an_unmarked_photo_decodes_to_none() -> None:
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        if (DATA / name).exists():
            assert wm.decode(photo(name)).release_id is None


def test_fingerprints_near_for_an_edit_far_for_another_photo() -> None:
    original = photo()
    base = fp.fingerprint(original)
    assert fp.distances(base, fp.fingerprint(original)) == (0, 0)
    edited = fp.fingerprint(jpeg(resize(original, 0.5), 75))
    assert fp.agrees(base, edited)
    other = fp.fingerprint(photo("obama2.jpg"))
    _, pdq = fp.distances(base, other)
    assert not fp.agrees(base, other) and pdq > fp.PDQ_MAX_BITS
    assert fp.Fingerprint.from_json(base.to_json()) == base


def test_marks_are_logged_in_the_checked_format_and_bound() -> None:
    release_id, marked, marks = mark_outputs([Image.fromarray(photo())])
    assert wm.decode(np.asarray(marked[0])).release_id == release_id
    clean_id, marks_json = check_marks(release_id, marks, 1)
    assert clean_id == release_id and marks_json is not None
    algs = [b["data"]["alg"] for b in soft_bindings(release_id, marks[0])]
    assert algs == [fp.ISCC_ALG, fp.PDQ_ALG, wm.WATERMARK_ALG]
    with pytest.raises(InputError):
        check_marks(release_id, marks, 2)  # one mark per output
    with pytest.raises(InputError):
        check_marks(release_id, [{**marks[0], "pdq": "00"}], 1)
    with pytest.raises(InputError):
        check_marks(None, marks, 1)
