"""Benchmarks of the inference log: the monitor's tick over a large window, and the collector's ingest."""
