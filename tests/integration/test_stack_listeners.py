"""The Flink job's own listeners bind loopback only: its REST port and the ports the kernel hands out
(the mini-cluster's RPC, blob and data servers, pyflink's py4j gateway in the JVM and its callback
server in Python). tests/integration/test_loopback_only.py covers the whole stack by its named
ports; this one makes sure the ephemeral ones of the analytics job are seen and checked too."""

from __future__ import annotations

import pytest

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.listeners import descendants, listeners

pytestmark = pytest.mark.integration


def test_the_flink_jvms_and_python_gateways_bind_loopback_only(settings: Settings, paths: Paths) -> None:
    flink = listeners(descendants(int((paths.run / "flink.pid").read_text())))
    # What `ss -ltnp` lists for the job: the Python process and the JVMs it started, more than REST.
    assert settings.analytics_rest_port in {item.port for item in flink}, flink
    assert len({item.port for item in flink}) >= 4, flink
    assert {item.command for item in flink} >= {"java", "python"}, flink
    assert [item for item in flink if not item.loopback] == []
