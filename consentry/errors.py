"""One exception tree for all of Consentry.

Every error a caller can act on derives from :class:`ConsentryError`. Each class
carries the process exit code the CLI uses for it: ``1`` when a check failed or
a request was refused, ``2`` when the input or the usage was wrong, and the
``code`` that names it in JSON, the same for the CLI's ``--json`` errors and the
HTTP service's error bodies (a subclass shares its parent's code unless it sets
its own). The README's table of error codes lists every class with its code, exit
code and HTTP status; ``tests/unit/test_error_codes.py`` keeps the two equal.

::

    ConsentryError
    ├── InputError                    (2) bad argument, file or value
    │   ├── ConfigError               (2) missing or unreadable home / settings
    │   ├── EnrollmentRejectedError   (2) photos failed the enrollment quality gates
    │   ├── CalibrationRejectedError  (2) a measured threshold is not safe to put in force
    │   ├── NotFoundError             (2) no such subject, grantee, grant, entry
    │   │   └── AmbiguousNameError    (2) a name matches several records
    │   ├── JobLimitError             (2) a job parameter is outside the one ``Limits``
    │   │   └── TooManyImagesError    (2) more images than a job may have
    │   ├── PriorFileError            (2) a prior file is not what its kind must be
    │   │                                 (a weights prior that is not safetensors)
    │   └── ImageError                (2) an image is unreadable, hostile, too large
    │       │                             or not an allowed format
    │       ├── UnsupportedImageError (2) not JPEG, PNG, WebP or TIFF (by magic bytes)
    │       ├── ImageTooLargeError    (2) too many bytes or pixels (decompression bomb)
    │       └── CorruptImageError     (2) empty, truncated or undecodable
    ├── RegistryError                 (1) the registry refused a change
    │   ├── DuplicateError            (1) the record already exists
    │   ├── ErasedError               (1) the subject's biometric data was erased
    │   ├── OptedOutError             (1) the subject opted out: nothing may use them
    │   ├── PriorHashMismatchError    (1) a prior file is not the registered one
    │   ├── PriorOwnerError           (1) a prior's SHA-256 is registered for another subject
    │   ├── ReviewError               (1) a review cannot be given, or an approval does not
    │   │                                 apply to the job resubmitted under it
    │   └── VaultError                (1) encrypted data does not decrypt (tampered/erased)
    ├── SignatureError                (1) a signature or envelope does not verify
    │   ├── UnknownKeyError           (1) signed by a key the registry does not know
    │   ├── RetiredKeyError           (1) signed by a key retired by rotation
    │   ├── NonCanonicalError         (1) signed bytes are not RFC 8785 canonical JSON
    │   └── StatementExpiredError     (1) a prepared statement is past its sign-by time
    ├── EngineError                   (2) a face engine or its model files are missing,
    │   │                                 incomplete or fail verification
    │   └── ModelHashError            (2) a model file's SHA-256 is not the pinned one
    ├── GrantError                    (1) a grant does not authorise the request
    │   ├── GrantExpiredError
    │   ├── GrantNotYetValidError
    │   └── GrantRevokedError
    ├── ProvenanceError               (1) provenance could not be created or does not verify
    │   ├── CertificateError          (2) a certificate or chain is unusable: expired,
    │   │                                 wrong usage, out of order
    │   └── ManifestError             (1) a C2PA manifest cannot be built, embedded or read
    └── LogError                      (1) the transparency log does not verify
        ├── ProofError                (1) an inclusion or consistency proof fails
        ├── CheckpointError           (1) a checkpoint is malformed or badly signed
        │   └── RollbackError         (2) a checkpoint or log is older than one already
        │                                 witnessed, or differs from it (split view)
        └── TamperError               (1) a row and its log leaf disagree
            └── LogIntegrityError     (2) the gate cannot trust the registry: a row
                                          contradicts the signed log, or the log
                                          itself does not verify; every job refused
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

__all__ = [
    "AmbiguousNameError",
    "CalibrationRejectedError",
    "CertificateError",
    "CheckpointError",
    "ConfigError",
    "ConsentryError",
    "CorruptImageError",
    "DuplicateError",
    "EngineError",
    "EnrollmentRejectedError",
    "ErasedError",
    "GrantError",
    "GrantExpiredError",
    "GrantNotYetValidError",
    "GrantRevokedError",
    "ImageError",
    "ImageTooLargeError",
    "InputError",
    "JobLimitError",
    "LogError",
    "LogIntegrityError",
    "ManifestError",
    "ModelHashError",
    "NonCanonicalError",
    "NotFoundError",
    "OptedOutError",
    "PriorFileError",
    "PriorHashMismatchError",
    "PriorOwnerError",
    "ProofError",
    "ProvenanceError",
    "RegistryError",
    "RetiredKeyError",
    "ReviewError",
    "RollbackError",
    "SignatureError",
    "StatementExpiredError",
    "TamperError",
    "TooManyImagesError",
    "UnknownKeyError",
    "UnsupportedImageError",
    "VaultError",
]


class ConsentryError(Exception):
    """Base of every Consentry error; ``exit_code`` is what the CLI exits with.

    ``str(error)`` is the message: what went wrong, in words every caller can show
    (HTTP clients get it as ``detail``). ``hint`` is optional advice for a person
    at the command line (``"run 'consentry log verify'"``, ``"drop --subject-key"``):
    the CLI prints it on its own line after the message; it never changes what the
    error means and is not sent to HTTP clients, whose options differ.

    ``code`` is the error's one machine-readable name, the same in the CLI's
    ``--json`` error and the HTTP error body. A subclass inherits its parent's code
    unless it declares its own (then it is a case callers tell apart), so a class
    defined outside this module has a code too. Codes are stable: a client may match
    on them.
    """

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint.strip() if hint and hint.strip() else None

    @property
    def message(self) -> str:
        """The message alone (``str(error)``), without the hint."""
        return str(self.args[0]) if self.args else ""


class InputError(ConsentryError):
    """The caller gave a bad argument, file or value."""

    code = "bad_input"
    exit_code = 2


class ConfigError(InputError):
    """The home folder or its settings are missing or unreadable."""


class EnrollmentRejectedError(InputError):
    """Photos failed the enrollment quality gates; nothing was enrolled.

    ``rejected`` lists ``(photo, reason)`` for every failing photo.
    """

    def __init__(self, rejected: list[tuple[str, str]]) -> None:
        self.rejected = rejected
        lines = "; ".join(
            f"{photo}: {reason.removeprefix(f'{photo}: ')}" for photo, reason in rejected
        )
        super().__init__(f"{len(rejected)} photo(s) rejected, nothing enrolled: {lines}")


class CalibrationRejectedError(InputError):
    """A measured threshold was not put in force: its set is too small for the target
    rates, its FNMR is above the bound, or it is far from the shipped default."""


class NotFoundError(InputError):
    """A named record (subject, grantee, grant, log entry, key) does not exist."""

    code = "not_found"


class AmbiguousNameError(NotFoundError):
    """A name matches more than one record; use the id instead."""


class JobLimitError(InputError):
    """A job parameter (``field``: images, steps, size, strength) is outside the
    bounds of ``consentry.limits.Limits``; nothing ran or was logged."""

    code = "bad_job"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class TooManyImagesError(JobLimitError):
    """A job gives more images than ``Limits.max_images`` (``field`` is ``images``)."""

    code = "too_many_images"

    def __init__(self, message: str) -> None:
        super().__init__("images", message)


class PriorFileError(InputError):
    """A prior file is not what its kind must be (e.g. a weights prior whose bytes
    are not a well-formed safetensors file); nothing was registered."""


class ImageError(InputError):
    """An image is unreadable, hostile, too large, or not an allowed format."""

    code = "bad_image"


class UnsupportedImageError(ImageError):
    """The data is not one of the allowed image formats (judged by its magic bytes)."""


class ImageTooLargeError(ImageError):
    """The file has too many bytes, or its header declares too many pixels."""

    code = "image_too_large"


class CorruptImageError(ImageError):
    """The file is empty, truncated, or cannot be decoded."""


class RegistryError(ConsentryError):
    """The registry refused a state change."""

    code = "conflict"


class DuplicateError(RegistryError):
    """The record already exists (same id or same unique name)."""


class ReviewError(RegistryError):
    """A review cannot be given (no such hold, already reviewed), or an approval does
    not apply to the job resubmitted under it (not approved, another job, expired)."""

    code = "review"


class ErasedError(RegistryError):
    """The subject's biometric data was erased; it cannot be used or re-enrolled from."""

    code = "erased"


class OptedOutError(RegistryError):
    """The subject opted out: no grant, kept photo or job may involve them again."""


class VaultError(RegistryError):
    """Encrypted biometric data does not decrypt: tampered, moved, or its key erased."""


class PriorHashMismatchError(RegistryError):
    """A prior file's SHA-256 is not the one the registry recorded; nothing was loaded."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"prior file {path} has SHA-256 {actual}, but the registry recorded {expected}: "
            "refusing to load it"
        )


class PriorOwnerError(RegistryError):
    """The file's SHA-256 is already registered as a prior of another subject: a
    SHA-256 belongs to one subject, so the same bytes cannot be released under a
    second subject's grant. The message names the existing prior id only."""


class SignatureError(ConsentryError):
    """A signature or a signed envelope does not verify."""

    code = "signature_required"


class UnknownKeyError(SignatureError):
    """The envelope is signed by a key the registry does not know."""


class RetiredKeyError(SignatureError):
    """The key was retired by a rotation and may no longer sign."""


class NonCanonicalError(SignatureError):
    """The signed payload is not RFC 8785 canonical JSON (or has duplicate keys)."""


class StatementExpiredError(SignatureError):
    """A statement prepared for detached signing is past its ``sign_by`` time."""

    code = "statement_expired"


class EngineError(ConsentryError):
    """A face engine or its model files are missing, incomplete or fail verification."""

    code = "engine_unavailable"
    exit_code = 2


class ModelHashError(EngineError):
    """A model file's SHA-256 differs from the digest pinned in the code."""


class GrantError(ConsentryError):
    """A grant does not authorise the request."""

    code = "refused"


class GrantExpiredError(GrantError):
    """The grant's ``not_after`` lies in the past."""


class GrantNotYetValidError(GrantError):
    """The grant's ``not_before`` lies in the future."""


class GrantRevokedError(GrantError):
    """The grant was revoked."""


class ProvenanceError(ConsentryError):
    """Provenance could not be created or does not verify."""

    code = "provenance"


class CertificateError(ProvenanceError):
    """A certificate or chain is unusable: expired, wrong usage, out of order."""

    exit_code = 2


class ManifestError(ProvenanceError):
    """A C2PA manifest cannot be built, embedded in the asset, or read from it."""


class LogError(ConsentryError):
    """The transparency log does not verify."""

    code = "log_error"


class ProofError(LogError):
    """An inclusion or consistency proof does not verify."""


class CheckpointError(LogError):
    """A checkpoint is malformed or its signature does not verify."""


class RollbackError(CheckpointError):
    """A checkpoint is smaller than one already trusted, or differs at equal size."""

    code = "log_rolled_back"
    exit_code = 2


class TamperError(LogError):
    """A database row and the log leaf that records it disagree."""


class LogIntegrityError(TamperError):
    """The database contradicts its signed log (a row edited, forged or deleted, or a
    leaf that does not verify): the gate refuses, and the CLI exits 2."""

    exit_code = 2
