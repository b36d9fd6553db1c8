"""Consentry: a consent-aware likeness registry and provenance toolkit.

The public surface is re-exported here; everything else is internal.
"""

from consentry.errors import (
    CheckpointError,
    ConsentryError,
    GrantError,
    GrantExpiredError,
    GrantNotYetValidError,
    GrantRevokedError,
    InputError,
    LogError,
    NotFoundError,
    ProofError,
    RegistryError,
    RetiredKeyError,
    RollbackError,
    SignatureError,
    TamperError,
)
from consentry.registry.signing import Envelope, SigningKey
from consentry.registry.store import InclusionProof, Registry
from consentry.registry.verify import LogReport

__all__ = [
    "CheckpointError",
    "ConsentryError",
    "Envelope",
    "GrantError",
    "GrantExpiredError",
    "GrantNotYetValidError",
    "GrantRevokedError",
    "InclusionProof",
    "InputError",
    "LogError",
    "LogReport",
    "NotFoundError",
    "ProofError",
    "Registry",
    "RegistryError",
    "RetiredKeyError",
    "RollbackError",
    "SignatureError",
    "SigningKey",
    "TamperError",
]
__version__ = "0.1.0"
