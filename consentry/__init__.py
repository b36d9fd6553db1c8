"""Consentry: a consent-aware likeness registry and provenance toolkit.

The public surface is what this module exports (``__all__``): the registry, the
gateway and its requests and receipts, media verification and audit, signing
helpers, and every error of the one exception tree. Everything else is internal
and may change between releases. Only the errors are imported with the package;
every other name is imported on first use (the registry loads SQLModel and
cryptography, the gateway, ``verify_media`` and the audit load the face engines),
so ``import consentry`` and ``consentry --help`` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consentry.errors import (
    AmbiguousNameError,
    CalibrationRejectedError,
    CertificateError,
    CheckpointError,
    ConfigError,
    ConsentryError,
    CorruptImageError,
    DuplicateError,
    EngineError,
    EnrollmentRejectedError,
    ErasedError,
    GrantError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    ImageError,
    ImageTooLargeError,
    InputError,
    JobLimitError,
    LogError,
    LogIntegrityError,
    ManifestError,
    ModelHashError,
    NonCanonicalError,
    NotFoundError,
    OptedOutError,
    PriorFileError,
    PriorHashMismatchError,
    PriorOwnerError,
    ProofError,
    ProvenanceError,
    RegistryError,
    RetiredKeyError,
    ReviewError,
    RollbackError,
    SignatureError,
    StatementExpiredError,
    TamperError,
    TooManyImagesError,
    UnknownKeyError,
    UnsupportedImageError,
    VaultError,
)
from consentry.lazy import lazy_exports

if TYPE_CHECKING:
    from consentry.gate import CheckRequest, Gateway, Receipt, RunRequest, run_job
    from consentry.provenance.audit import AuditReport, audit_paths
    from consentry.provenance.verify import VerifyResult, verify_media
    from consentry.registry.signing import Envelope, SigningKey
    from consentry.registry.store import InclusionProof, Registry
    from consentry.registry.verify import LogReport

__all__ = [
    "AmbiguousNameError",
    "AuditReport",
    "CalibrationRejectedError",
    "CertificateError",
    "CheckRequest",
    "CheckpointError",
    "ConfigError",
    "ConsentryError",
    "CorruptImageError",
    "DuplicateError",
    "EngineError",
    "EnrollmentRejectedError",
    "Envelope",
    "ErasedError",
    "Gateway",
    "GrantError",
    "GrantExpiredError",
    "GrantNotYetValidError",
    "GrantRevokedError",
    "ImageError",
    "ImageTooLargeError",
    "InclusionProof",
    "InputError",
    "JobLimitError",
    "LogError",
    "LogIntegrityError",
    "LogReport",
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
    "Receipt",
    "Registry",
    "RegistryError",
    "RetiredKeyError",
    "ReviewError",
    "RollbackError",
    "RunRequest",
    "SignatureError",
    "SigningKey",
    "StatementExpiredError",
    "TamperError",
    "TooManyImagesError",
    "UnknownKeyError",
    "UnsupportedImageError",
    "VaultError",
    "VerifyResult",
    "audit_paths",
    "run_job",
    "verify_media",
]
__version__ = "0.1.0"

# public name -> the module that defines it, imported on first use
_LAZY: dict[str, str] = {
    "AuditReport": "consentry.provenance.audit",
    "CheckRequest": "consentry.gate",
    "Envelope": "consentry.registry.signing",
    "Gateway": "consentry.gate",
    "InclusionProof": "consentry.registry.store",
    "LogReport": "consentry.registry.verify",
    "Receipt": "consentry.gate",
    "Registry": "consentry.registry.store",
    "RunRequest": "consentry.gate",
    "SigningKey": "consentry.registry.signing",
    "VerifyResult": "consentry.provenance.verify",
    "audit_paths": "consentry.provenance.audit",
    "run_job": "consentry.gate",
    "verify_media": "consentry.provenance.verify",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
