"""Helpers shared by tests: the CLI runner, sample media, face crops.

Test modules import from here, never from one another.
"""
