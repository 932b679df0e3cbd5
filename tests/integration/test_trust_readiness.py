"""/readyz under load: each dependency is asked at most once per cache period however often it is
called, Kafka over one kept connection, and a hanging dependency holds at most one call.

A second API reaches Kafka and the Lambda through counting forwarders (tests/integration/tcp_counter.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from healthcare.settings import Settings
from tests.integration.dynamo_stack import another_api
from tests.integration.tcp_counter import TcpCounter
from tests.waiting import eventually

pytestmark = pytest.mark.integration

CACHE_SECONDS = 1.0
INVOKE = b"POST /2015-03-31/functions/"


@pytest.fixture(scope="module")
async def kafka_counter(settings: Settings) -> AsyncIterator[TcpCounter]:
    counter = await TcpCounter(int(settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])).start()
    yield counter
    await counter.close()


@pytest.fixture(scope="module")
async def lambda_counter(settings: Settings) -> AsyncIterator[TcpCounter]:
    assert settings.lambda_endpoint_url
    counter = await TcpCounter(urlsplit(settings.lambda_endpoint_url).port or 80).start()
    yield counter
    await counter.close()


@pytest.fixture(scope="module")
def counted_api(kafka_counter: TcpCounter, lambda_counter: TcpCounter) -> Iterator[str]:
    env = {
        "HC_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_counter.port}",
        "HC_LAMBDA_ENDPOINT_URL": f"http://127.0.0.1:{lambda_counter.port}",
        "HC_READY_CACHE_SECONDS": str(CACHE_SECONDS),
        "HC_READY_TIMEOUT_SECONDS": "1",
    }
    with another_api(env, log_name="test-readiness-api") as other:
        yield other.url


async def _calls_over(client: httpx.AsyncClient, *, seconds: float, at_least: int) -> list[httpx.Response]:
    """Calls to /readyz, ten at a time, for `seconds` and at least `at_least` of them."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    answers: list[httpx.Response] = []
    while loop.time() < end or len(answers) < at_least:
        answers += await asyncio.gather(*(client.get("/readyz") for _ in range(10)))
    return answers


async def test_readyz_asks_each_dependency_once_per_period(
    counted_api: str, kafka_counter: TcpCounter, lambda_counter: TcpCounter
) -> None:
    async with httpx.AsyncClient(base_url=counted_api, timeout=30) as client:
        warm = await _calls_over(client, seconds=0, at_least=1)
        assert warm[0].status_code == 200, warm[0].text
        kafka_counter.reset()
        lambda_counter.reset()
        began = asyncio.get_running_loop().time()
        answers = await _calls_over(client, seconds=4 * CACHE_SECONDS, at_least=60)
        elapsed = asyncio.get_running_loop().time() - began
    assert all(r.status_code == 200 for r in answers)
    periods = int(elapsed / CACHE_SECONDS) + 2
    invocations = lambda_counter.received.count(INVOKE)
    assert 1 <= invocations <= periods < len(answers), (invocations, periods, len(answers))
    assert kafka_counter.connections == 0  # the admin connection made while warming up is kept
    assert all(r.json()["ageSeconds"] <= CACHE_SECONDS + 1.5 for r in answers)


async def test_a_hanging_dependency_holds_one_call_at_most(
    counted_api: str, lambda_counter: TcpCounter
) -> None:
    lambda_counter.reset("hang")
    try:
        async with httpx.AsyncClient(base_url=counted_api, timeout=30) as client:
            answers = await _calls_over(client, seconds=5 * CACHE_SECONDS, at_least=60)
        assert lambda_counter.connections >= 1  # the hanging Lambda was asked ...
        assert lambda_counter.most_open <= 1  # ... and never twice at once
        late = [r for r in answers if r.status_code == 503]
        assert late and all(r.json()["failing"] == ["lambda"] for r in late)
    finally:
        lambda_counter.reset("forward")
    async with httpx.AsyncClient(base_url=counted_api, timeout=30) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout=30, interval=0.2, what="/readyz answering 200 again")
