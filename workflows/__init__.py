"""Temporal workflow definitions: deterministic orchestration, no I/O; one model in, one model out."""
