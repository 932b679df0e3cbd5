"""Profiles: dev keeps today's defaults; test and bench get their own ports, folders and names."""

import itertools

import pytest

from healthcare import profiles
from healthcare.settings import REPO_ROOT, Settings

EPHEMERAL_LOW = 32768  # Linux's default ip_local_port_range starts here


def test_dev_keeps_the_documented_defaults() -> None:
    s = Settings(profile="dev")
    assert s.state_dir == REPO_ROOT / ".state"
    assert s.database_url.endswith("@127.0.0.1:5432/healthcare")
    assert (s.temporal_address, s.temporal_ui_url, s.temporal_namespace) == (
        "127.0.0.1:7233",
        "http://127.0.0.1:8233",
        "default",
    )
    assert (s.kafka_bootstrap_servers, s.s3_endpoint_url, s.lambda_endpoint_url) == (
        "127.0.0.1:9092",
        "http://127.0.0.1:8333",
        "http://127.0.0.1:8080",
    )
    assert (s.api_port, s.ws_port, s.codec_port, s.s3_bucket) == (8000, 8001, 8002, "invoices")
    assert (s.topic_appointment_events, s.topic_analytics_results) == (
        "appointment-events",
        "analytics-results",
    )
    assert (s.stack_port("worker_metrics"), s.stack_port("flink_rest")) == (9464, 8081)


@pytest.mark.parametrize("profile", ["test", "bench", "chaos"])
def test_other_profiles_share_nothing_with_dev_but_the_tools(profile: profiles.Profile) -> None:
    dev, other = Settings(profile="dev"), Settings(profile=profile)
    assert other.state_dir == REPO_ROOT / ".state" / profile
    assert other.tools_dir == dev.tools_dir == REPO_ROOT / ".state" / "tools"
    for field in (
        "database_url",
        "temporal_address",
        "temporal_ui_url",
        "temporal_namespace",
        "kafka_bootstrap_servers",
        "topic_appointment_events",
        "topic_analytics_results",
        "s3_endpoint_url",
        "s3_bucket",
        "lambda_endpoint_url",
        "api_port",
        "ws_port",
        "codec_port",
        "payment_provider_url",
    ):
        assert getattr(other, field) != getattr(dev, field), field
    assert other.database_url.rsplit("/", 1)[1] == f"healthcare_{profile}"


def test_no_two_profiles_share_a_port_and_none_is_ephemeral() -> None:
    sets = {name: set(profiles.all_ports(offset).values()) for name, offset in profiles.PORT_OFFSETS.items()}
    for name, ports in sets.items():
        assert len(ports) == len(profiles.all_ports(profiles.PORT_OFFSETS[name])), f"{name} reuses a port"
        assert min(ports) > 1024 and max(ports) < EPHEMERAL_LOW, name
    for (a, pa), (b, pb) in itertools.combinations(sets.items(), 2):
        assert not pa & pb, f"{a} and {b} share {sorted(pa & pb)}"


def test_explicit_settings_win_over_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HC_PROFILE", "test")
    monkeypatch.setenv("HC_API_PORT", "12345")
    monkeypatch.setenv("HC_PORT_OFFSET", "9000")
    s = Settings()
    assert s.api_port == 12345
    assert s.ws_port == 8001 + 9000
    assert s.stack_port("kafka_controller") == 9093 + 9000
    assert s.temporal_namespace == "test"


def test_a_dev_stack_elsewhere_keeps_its_tools_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HC_PROFILE", "dev")
    monkeypatch.setenv("HC_STATE_DIR", "/srv/clinic-state")
    s = Settings()
    assert (str(s.state_dir), str(s.tools_dir)) == ("/srv/clinic-state", "/srv/clinic-state/tools")
