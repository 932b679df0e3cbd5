"""Sampling of refused tokens for the audit trail: bounded per key, per window and in all."""

from api.refusals import RefusalSampler


def test_one_record_per_key_per_window_and_a_cap_in_all() -> None:
    now = [0.0]
    sampler = RefusalSampler(window_seconds=60, max_per_window=3, clock=lambda: now[0])
    assert sampler.admit("10.0.0.1", "user-a", "expired")
    assert not sampler.admit("10.0.0.1", "user-a", "expired")  # the same key again: counted only
    assert sampler.admit("10.0.0.1", "user-a", "revoked")
    assert sampler.admit("10.0.0.2", None, "invalid")
    assert not sampler.admit("10.0.0.3", None, "invalid")  # the cap for this window is reached
    now[0] = 61.0
    assert sampler.admit("10.0.0.1", "user-a", "expired")  # a new window
