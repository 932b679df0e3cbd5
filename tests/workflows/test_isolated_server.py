"""The time-skipping test server listens on every interface: only those of a namespace of its own."""

from __future__ import annotations

import os

from temporalio.testing import WorkflowEnvironment

from tests.listeners import descendants, interfaces, listeners, netns


async def test_the_test_server_is_reachable_only_through_loopback(env: WorkflowEnvironment) -> None:
    assert await env.client.service_client.check_health()
    found = listeners(descendants(os.getpid()))
    here = [item for item in found if item.netns == netns(os.getpid())]
    inside = [item for item in found if item.netns != netns(os.getpid())]
    # The server listens on all interfaces, but in a namespace whose only interface is loopback ...
    assert inside, found
    assert all(not item.loopback for item in inside)  # the reason it lives there
    for pid in {item.pid for item in inside}:
        assert interfaces(pid) == ["lo"]
    # ... and what listens in ours (the forwarder, and whatever else the session started) is loopback.
    assert here and all(item.loopback for item in here), here
