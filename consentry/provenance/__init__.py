"""Provenance: C2PA manifests on every released output, and the checks that read them back.

Signing (generic C2PA, nothing consent-specific):

- :mod:`consentry.provenance.certs`: a development PKI (root -> intermediate -> signer),
  installing an organisation's own chain, and the chain checks run before any signing.
- :mod:`consentry.provenance.signer`: the :class:`~consentry.provenance.signer.ManifestSigner`
  interface, so the signing key may live in a file, a KMS or an HSM.
- :mod:`consentry.provenance.c2pa_io`: sign an image with a manifest, and read one back
  with a trust decision (only ``"trusted"`` means the chain ends at a root the reader gave).

Consent evidence (built on the registry and its log):

- :mod:`consentry.provenance.manifest`: the manifest definition (AI-made, which prior,
  which decision, its log index and inclusion proof, pseudonymous subject references).
- :mod:`consentry.provenance.sign`: signs a released output with that manifest.
- :mod:`consentry.provenance.verify`: ``verify_media``: the manifest is trusted **and**
  the consent it claims held at the decision's log index, judged from the signed log.
- :mod:`consentry.provenance.audit`: every image of a set: provenance, consent, and
  registered faces found in media without valid provenance.

Durable marks (a stripped output is still traced to its decision):

- :mod:`consentry.provenance.watermark`: the DWT-DCT-SVD watermark carrying a release id.
- :mod:`consentry.provenance.fingerprint`: ISCC image code and PDQ, distances, thresholds.
- :mod:`consentry.provenance.marks`: marks a release's outputs; their soft-binding assertions.
- :mod:`consentry.provenance.recover`: watermark -> signed decision -> fingerprint.
"""
