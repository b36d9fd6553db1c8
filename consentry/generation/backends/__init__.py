"""Generation backends: the :class:`Backend` interface the gateway calls, and implementations.

- :mod:`.base`: the interface, :class:`PriorRef`, prior hash verification.
- :mod:`.diffusers_backend`: Stable Diffusion through ``diffusers`` from local
  folders (imports torch and diffusers; import it explicitly).
"""

from consentry.generation.backends.base import (
    LOADABLE_PRIOR_KINDS,
    Backend,
    PriorHashMismatchError,
    PriorRef,
    verified_copy,
)

__all__ = ["LOADABLE_PRIOR_KINDS", "Backend", "PriorHashMismatchError", "PriorRef", "verified_copy"]
