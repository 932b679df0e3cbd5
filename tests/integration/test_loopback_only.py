"""Everything `make test` runs listens on 127.0.0.1 only, on ports of the test profile's own."""

from __future__ import annotations

import os
from pathlib import Path

from devstack.paths import Paths
from healthcare import profiles
from healthcare.settings import Settings
from tests.listeners import descendants, listeners


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_the_stack_and_the_servers_the_tests_start_listen_on_loopback_only(
    settings: Settings, paths: Paths, dynamo_api_url: str
) -> None:
    supervisor = int(paths.stack_pid.read_text())
    found = listeners(descendants(supervisor) | descendants(os.getpid()))
    ports = {item.port for item in found}
    named = ("postgres", "temporal", "kafka", "s3", "s3_filer", "lambda", "api", "ws", "codec", "flink_rest")
    # The check sees the stack and the second API with its DynamoDB server (so it can fail) ...
    assert {settings.stack_port(n) for n in (*named, "moto", "dynamo_api")} <= ports
    # ... and none of them listens beyond loopback.
    assert [item for item in found if not item.loopback] == []
    # Every fixed port is one of this profile's, so a dev stack beside it never collides; the
    # rest are ports the kernel handed out (Temporal's and Flink's internal services).
    fixed = {port for port in ports if port < _ephemeral_low()}
    assert fixed <= set(profiles.all_ports(settings.port_offset).values()), sorted(fixed)
    if settings.profile != "dev":
        assert not fixed & set(profiles.all_ports(0).values())
