"""Prefect tasks: thin wrappers over ``mlcanary`` adding retries (I/O only), logging and artifacts."""
