"""The base model a prior is trained against, named by one SHA-256 of its folder.

A prior only makes sense on top of the exact weights it was trained on, so the
registry records :func:`model_folder_sha256` of the model folder with every
trained prior, and a checkpoint refuses to resume against another folder.

Invariant: the digest covers each regular file's path relative to the folder
(POSIX, sorted by its UTF-8 bytes, length-prefixed) and the SHA-256 of its
content, under a format tag; renaming, adding, removing or changing any file
changes it, timestamps and permissions do not. Symbolic links are followed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from consentry.errors import InputError
from consentry.hashing import sha256_file

__all__ = ["model_folder_sha256"]

_MODEL_HASH_FORMAT = b"consentry-model-folder/1\n"


def model_folder_sha256(model_dir: Path | str) -> str:
    """A stable SHA-256 over every regular file in a model folder (see the module).

    Cost: one read of every byte (SD 1.5: ~4 GB). Raises :class:`InputError` if
    ``model_dir`` is not a folder or holds no files.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist or is not a folder")
    files = sorted(
        (path.relative_to(folder).as_posix().encode("utf-8"), path)
        for path in folder.rglob("*")
        if path.is_file()
    )
    if not files:
        raise InputError(f"model folder {folder} holds no files")
    digest = hashlib.sha256(_MODEL_HASH_FORMAT)
    for name, path in files:
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()
