"""Provenance: C2PA manifests signed with an X.509 chain, and the certificates behind them.

- :mod:`consentry.provenance.certs`: a development PKI (root -> intermediate -> signer),
  installing an organisation's own chain, and the chain checks run before any signing.
- :mod:`consentry.provenance.signer`: the :class:`~consentry.provenance.signer.ManifestSigner`
  interface, so the signing key may live in a file, a KMS or an HSM.
- :mod:`consentry.provenance.c2pa_io`: sign an image with a manifest, and read one back
  with a trust decision (only ``"trusted"`` means the chain ends at a root the reader gave).

Nothing here is consent-specific; the gateway composes these pieces.
"""
