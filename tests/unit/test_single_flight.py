"""`SingleFlight`: concurrent calls for one key run the work once and share its result or its error."""

import asyncio

import pytest

from pollux.single_flight import SingleFlight


async def test_concurrent_calls_for_one_key_share_one_run():
    flights: SingleFlight[str, int] = SingleFlight()
    runs = []
    gate = asyncio.Event()

    async def work(n: int) -> int:
        runs.append(n)
        await gate.wait()
        return n

    calls = [asyncio.create_task(flights.run("a", lambda i=i: work(i))) for i in range(5)]
    other = asyncio.create_task(flights.run("b", lambda: work(99)))
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*calls) == [0] * 5 and await other == 99
    assert runs == [0, 99]
    assert await flights.run("a", lambda: work(7)) == 7  # a later call runs again


async def test_an_error_reaches_every_waiter_and_the_next_call_retries():
    flights: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def broken() -> int:
        await gate.wait()
        raise ConnectionError("down")

    calls = [asyncio.create_task(flights.run("k", broken)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    for call in calls:
        with pytest.raises(ConnectionError):
            await call

    async def fine() -> int:
        return 1

    assert await flights.run("k", fine) == 1
