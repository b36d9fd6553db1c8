"""Helpers shared by tests: the CLI runner, sample media, the shipped photos and
face crops, and the registries tests build (``worlds``).

Test modules import from here, never from one another.
"""
