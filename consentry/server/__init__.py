"""The HTTP service: the gateway, the registry's admin actions and its public log.

One job per module: :mod:`.app` (the ``create_app`` factory), :mod:`.state` (what
the routes share), :mod:`.errors` (the one error body and error mapping),
:mod:`.guard` (body size, strict forms, the last-resort 500), :mod:`.auth` (API
keys), :mod:`.models` (request bodies), :mod:`.views` (what a grantee may read),
and :mod:`.routers` (gateway, admin, public, tiles).

Invariants (detailed in each module): fail closed (bad input is a typed error
answer, never an allow; an unexpected exception is a 500 ``internal`` with no
detail); a grantee key never opens an admin route, nor the admin key a grantee
route; job bounds are the one :class:`~consentry.limits.Limits` the CLI uses.
"""

from consentry.server.app import DEFAULT_FOLLOW_INTERVAL, MAX_IMAGES, create_app
from consentry.server.auth import hash_admin_key
from consentry.server.errors import ApiError
from consentry.server.guard import MAX_BODY_BYTES

__all__ = [
    "DEFAULT_FOLLOW_INTERVAL",
    "MAX_BODY_BYTES",
    "MAX_IMAGES",
    "ApiError",
    "create_app",
    "hash_admin_key",
]
