"""Temporal workflows: deterministic, no I/O, one model in and out. Import only healthcare.contracts."""
