"""The Kafka cluster id the devstack formats storage with is one the storage tool can read."""

from __future__ import annotations

import re
import secrets

import pytest

from devstack import components


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["-startsWithADash-xyz0123", "AbCdEfGhIjKlMnOpQrStUvWx"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(draws))
    assert components.kafka_cluster_id() == "AbCdEfGhIjKlMnOpQrStUv"


def test_ids_are_22_base64url_characters_and_never_an_option() -> None:
    ids = {components.kafka_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
