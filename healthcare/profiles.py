"""Named local stacks (`HC_PROFILE`): `dev` for a developer, `test` for `make test`, `bench` for
`make bench`, `chaos` for `make chaos` (it restarts and kills components, so it never shares a stack).

Each profile is a whole stack of its own, so they run side by side on one machine and a test or a
benchmark never writes into the stack a developer works with:

- its own state folder: `.state/` for dev (as before), `.state/<profile>/` for the others; the built
  tools stay shared in `.state/tools/`;
- its own ports: every port of the stack is dev's port plus the profile's offset (`HC_PORT_OFFSET`
  overrides it), including the ones no `HC_` setting names (SeaweedFS's filer, master, volume and
  admin, the Lambda emulators, the metrics listeners, Kafka's controller, Temporal's HTTP and metrics
  ports, Flink's REST port and the extra servers the tests start);
- its own database name, Temporal namespace, topic names and bucket.

Only settings that are not set explicitly take the profile's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Profile = Literal["dev", "test", "bench", "chaos"]

# Ports of the dev profile; every other profile adds its offset. `tests/unit/test_profiles.py`
# checks that no port of one profile is a port of another and that all stay below the kernel's
# ephemeral range (32768), where an outgoing connection could already hold them.
DEV_PORTS: dict[str, int] = {
    "postgres": 5432,
    "temporal": 7233,
    "temporal_http": 7243,
    "temporal_ui": 8233,
    "temporal_metrics": 9233,
    "kafka": 9092,
    "kafka_controller": 9093,
    "s3": 8333,
    "s3_grpc": 18333,
    "s3_filer": 8888,
    "s3_filer_grpc": 18888,
    "s3_master": 9333,
    "s3_master_grpc": 19333,
    "s3_volume": 9340,
    "s3_volume_grpc": 19340,
    "s3_admin": 12535,
    "s3_admin_grpc": 22535,
    "lambda": 8080,
    "lambda_api": 9100,  # emulator i (1-based) serves the Invoke API on lambda_api + i ...
    "lambda_runtime": 9200,  # ... and its runtime API on lambda_runtime + i
    "api": 8000,
    "ws": 8001,
    "codec": 8002,  # the Temporal UI's codec server
    "worker_metrics": 9464,
    "consumer_metrics": 9465,
    "flink_rest": 8081,
    "payments": 8090,  # the local payment provider (devstack/payment_provider.py)
    # Servers the integration tests start beside the stack.
    "moto": 8008,
    "dynamo_api": 8003,
    "it_relay_1": 8004,
    "it_relay_2": 8005,
    "it_relay_3": 8007,  # a relay checking accounts every second (tests/integration/test_trust_relay.py)
    "it_api": 8006,  # an API with changed settings (tests/integration/dynamo_stack.py another_api)
    "it_flink_rest": 8091,
}
LAMBDA_POOL_MAX = 8  # ports reserved for emulators 1..8 (DEVSTACK_LAMBDA_POOL)
PORT_OFFSETS: dict[str, int] = {"dev": 0, "test": 3000, "bench": 6000, "chaos": 7500}


def all_ports(offset: int) -> dict[str, int]:
    """Every port a stack with this offset may listen on, by name (emulators spelled out)."""
    ports = {name: port + offset for name, port in DEV_PORTS.items()}
    for i in range(1, LAMBDA_POOL_MAX + 1):
        ports[f"lambda_api_{i}"] = ports["lambda_api"] + i
        ports[f"lambda_runtime_{i}"] = ports["lambda_runtime"] + i
    del ports["lambda_api"], ports["lambda_runtime"]
    return ports


def defaults(profile: Profile, offset: int, repo_root: Path) -> dict[str, Any]:
    """The settings a profile implies (the caller keeps whatever was set explicitly)."""

    def port(name: str) -> int:
        return DEV_PORTS[name] + offset

    dev = profile == "dev"
    return {
        "state_dir": repo_root / ".state" if dev else repo_root / ".state" / profile,
        "database_url": (
            f"postgresql+asyncpg://healthcare:healthcare@127.0.0.1:{port('postgres')}/"
            + ("healthcare" if dev else f"healthcare_{profile}")
        ),
        "temporal_address": f"127.0.0.1:{port('temporal')}",
        "temporal_ui_url": f"http://127.0.0.1:{port('temporal_ui')}",
        "temporal_namespace": "default" if dev else profile,
        "kafka_bootstrap_servers": f"127.0.0.1:{port('kafka')}",
        "topic_appointment_events": "appointment-events" if dev else f"{profile}-appointment-events",
        "topic_analytics_results": "analytics-results" if dev else f"{profile}-analytics-results",
        "s3_endpoint_url": f"http://127.0.0.1:{port('s3')}",
        "s3_bucket": "invoices" if dev else f"invoices-{profile}",
        "lambda_endpoint_url": f"http://127.0.0.1:{port('lambda')}",
        "analytics_rest_port": port("flink_rest"),
        "payment_provider_url": f"http://127.0.0.1:{port('payments')}",
        "api_port": port("api"),
        "ws_port": port("ws"),
        "codec_port": port("codec"),
    }
