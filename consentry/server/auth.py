"""Who is calling: the API-key dependencies of the routes.

Invariants
- Keys come as ``Authorization: Bearer <key>``; a missing, empty or unknown key is
  a 401 ``unauthorized`` (fail closed: no route guesses a caller).
- Grantee keys are checked by the registry (:meth:`Registry.authenticate_grantee`);
  the admin key by the SHA-256 given to ``create_app``, compared in constant time.
- A grantee key never opens an admin route, nor the admin key a grantee route;
  only :data:`AuthAny` routes take either.
- The requester of a job is always the grantee who holds the key: no request field
  names a requester.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from consentry.errors import SignatureError
from consentry.registry.models import Grantee
from consentry.server.errors import ApiError
from consentry.server.state import state_of

__all__ = ["ADMIN", "AuthAny", "AuthGrantee", "hash_admin_key"]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def hash_admin_key(key: str) -> str:
    """The SHA-256 (hex) under which an admin key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "unauthorized", "give an API key: Authorization: Bearer <key>")
    return credentials.credentials


def _is_admin(request: Request, token: str) -> bool:
    return hmac.compare_digest(hash_admin_key(token), state_of(request).admin_digest)


def _grantee_auth(request: Request, credentials: Credentials) -> Grantee:
    token = _token(credentials)
    try:
        return state_of(request).registry.authenticate_grantee(token)
    except SignatureError:
        raise ApiError(401, "unauthorized", "unknown grantee API key") from None


def _admin_auth(request: Request, credentials: Credentials) -> None:
    if not _is_admin(request, _token(credentials)):
        raise ApiError(401, "unauthorized", "this route needs the admin key")


def _grantee_or_admin(request: Request, credentials: Credentials) -> Grantee | None:
    """The grantee holding the key, or None for the admin key; else 401."""
    token = _token(credentials)
    if _is_admin(request, token):
        return None
    try:
        return state_of(request).registry.authenticate_grantee(token)
    except SignatureError:
        raise ApiError(401, "unauthorized", "give a grantee or the admin API key") from None


AuthGrantee = Annotated[Grantee, Depends(_grantee_auth)]
AuthAny = Annotated[Grantee | None, Depends(_grantee_or_admin)]
ADMIN = [Depends(_admin_auth)]
