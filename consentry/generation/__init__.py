"""The generation gateway: consent policy, diffusers backends, personalised priors.

Training priors lives in :mod:`consentry.training` (only under a ``train`` grant).

Modules, each with one job:

``policy``
    The pure decision: who a job involves, which grants cover them, the limits.
``gateway``
    Facts from the registry, pre-check, running a job, post-check, revocation
    re-check at release, logging and signing (fail closed: any error refuses).
``service``
    The HTTP API over the gateway (FastAPI).
``aliases``
    Registered names and aliases found in prompts.
``backends``
    ``diffusers_backend`` (Stable Diffusion, hash-checked priors, one job pipeline
    per call), ``personal`` (exemplar restoration), ``base`` (the protocol and the
    prior store).
``placement``
    Where pipelines and training run (``--device``, ``--dtype``).
``exemplars``, ``restoration``, ``memorization``
    Exemplar priors, restoration methods and metrics, near-copy detection.
``tiny``
    A tiny real Stable Diffusion pipeline built from configs, for tests and demos.

Importing this package imports none of them (torch and diffusers load only when a
module that needs them is imported).
"""
