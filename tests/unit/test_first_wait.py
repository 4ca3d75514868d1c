"""`FirstWait`: awaits a coroutine as `await` does, and reports its first suspension (where the disconnect watcher of
a whole answer starts). The HTTP side is tests/test_rest.py::test_client_disconnect_cancels_a_whole_answer."""

import asyncio

import pytest

from pollux.first_wait import FirstWait


def test_work_that_never_waits_starts_no_watcher():
    waits = []

    async def quick():
        return 42

    async def main():
        return await FirstWait(quick(), lambda: waits.append(1))

    assert asyncio.run(main()) == 42
    assert waits == []


def test_work_that_waits_reports_once_and_gets_what_it_awaited():
    waits = []

    async def slow():
        await asyncio.sleep(0)
        value = await asyncio.get_running_loop().run_in_executor(None, lambda: "from a thread")
        await asyncio.sleep(0.01)
        return value

    async def main():
        return await FirstWait(slow(), lambda: waits.append(1))

    assert asyncio.run(main()) == "from a thread"
    assert waits == [1]


def test_a_cancellation_reaches_the_work_and_errors_come_out():
    seen = []

    async def cancelled():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing():
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main():
        task = asyncio.create_task(_await(FirstWait(cancelled(), lambda: None)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="boom"):
            await FirstWait(failing(), lambda: None)

    asyncio.run(main())
    assert seen == ["cancelled"]


async def _await(awaitable):
    return await awaitable
