"""The generation gateway: consent policy, diffusers backends, personalised priors.

Not built yet (a later issue); the package exists so the layout is stable.
"""
