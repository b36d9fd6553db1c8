"""``labelled_photos``: the listing of a calibration set, and the copies it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from consentry.errors import CalibrationRejectedError
from consentry.faces.calibration import labelled_photos
from tests.support.faces import PHOTOS


def _set(root: Path, files: dict[str, str]) -> Path:
    for target, shipped in files.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PHOTOS / shipped, root / target)
    return root


def test_distinct_photos_are_listed_with_a_stable_hash(tmp_path: Path) -> None:
    folder = _set(tmp_path / "set", {"obama/1.jpg": "obama.jpg", "obama/2.jpg": "obama2.jpg",
                                     "biden/1.jpg": "biden.jpg"})  # fmt: skip
    items, digest = labelled_photos(folder)
    assert [(who, p.name) for who, p in items] == [
        ("biden", "1.jpg"), ("obama", "1.jpg"), ("obama", "2.jpg")]  # fmt: skip
    assert labelled_photos(folder)[1] == digest


@pytest.mark.parametrize(
    ("copy", "where"),
    [("biden/2.jpg", "two identities"), ("obama/3.jpg", "one identity")],
)
def test_the_same_photo_twice_is_refused_naming_both_files(
    tmp_path: Path, copy: str, where: str
) -> None:
    folder = _set(tmp_path / "set", {"obama/1.jpg": "obama.jpg", "obama/2.jpg": "obama2.jpg",
                                     "biden/1.jpg": "biden.jpg", copy: "obama.jpg"})  # fmt: skip
    with pytest.raises(CalibrationRejectedError, match="appear twice") as caught:
        labelled_photos(folder)
    message = str(caught.value)
    assert "obama/1.jpg" in message and copy in message and where in message
    assert caught.value.hint and "remove one copy" in caught.value.hint
