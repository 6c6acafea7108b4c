"""Test doubles and helpers for tests and benchmarks: in-memory seams, a drift fake, free ports.

Nothing in the product imports this package (``tests/unit/test_layering.py`` checks it).
"""
