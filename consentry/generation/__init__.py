"""What the gate runs: diffusers backends, personalised priors, restoration.

The gate itself (policy, facts, the gateway, release) is :mod:`consentry.gate`.

Training priors lives in :mod:`consentry.training` (only under a ``train`` grant).

Modules, each with one job:

``service``
    The HTTP API over the gateway (FastAPI).
``backends``
    ``diffusers_backend`` (Stable Diffusion, hash-checked priors, one job pipeline
    per call), ``personal`` (exemplar restoration), ``base`` (the protocol and the
    prior store).
``placement``
    Where pipelines and training run (``--device``, ``--dtype``).
``exemplars``, ``restoration``
    Exemplar priors, restoration methods and metrics.
``tiny``
    A tiny real Stable Diffusion pipeline built from configs, for tests and demos.

Importing this package imports none of them (torch and diffusers load only when a
module that needs them is imported).
"""
