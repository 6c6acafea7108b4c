"""Telemetry: inference events, their collection and the metric sources built on them."""
