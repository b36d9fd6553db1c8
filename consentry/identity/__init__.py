"""Identity: who a face is, as the registry's signed log says.

- :mod:`consentry.identity.index`: the FAISS index of enrolled subjects, following
  the registry's log (verified entries only; erasures remove vectors).
- :mod:`consentry.identity.lookup`: the one face pipeline (scan with the face cap,
  embed, match against the index), used by the gate, ``match`` and ``audit``.
- :mod:`consentry.identity.enroll`: from photos to a signed enrollment (quality
  gates, consistency with the subject's earlier photos, encryption at rest).

It sits between :mod:`consentry.faces` (engines and safe image input, which depend
on nothing above them) and the registry.
"""
