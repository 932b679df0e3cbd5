"""The Flink job on a cluster takes Kafka credentials from its environment, not its arguments."""

import json

import pytest

from analytics_flink.__main__ import job_kafka_properties


def test_sasl_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HC_KAFKA_SASL_USERNAME", "analytics")
    monkeypatch.setenv("HC_KAFKA_SASL_PASSWORD", "p@ss")
    props = job_kafka_properties("{}")
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert "ScramLoginModule required" in props["sasl.jaas.config"]
    assert 'username="analytics" password="p@ss"' in props["sasl.jaas.config"]


def test_flags_win_and_plaintext_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HC_KAFKA_SECURITY_PROTOCOL", "HC_KAFKA_SASL_MECHANISM", "HC_KAFKA_SASL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert job_kafka_properties("{}") == {"security.protocol": "PLAINTEXT"}
    assert job_kafka_properties(json.dumps({"security.protocol": "SSL"})) == {"security.protocol": "SSL"}
