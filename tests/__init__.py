"""Test suites: unit (no services), workflows (Temporal test servers, replays), integration (real stack)."""
