"""Prefect flows: the entrypoints named in ``prefect.yaml``."""
