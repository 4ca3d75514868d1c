"""`FirstWait`: awaits as `await` does, and reports the first suspension (where a whole answer's disconnect watcher
and a body's idle timer start); and the idle timer's cancellation bookkeeping. The HTTP side is in tests/test_rest.py
(disconnects) and tests/test_files.py (stalled bodies)."""

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
    started = asyncio.Event()

    async def cancelled():
        try:
            started.set()
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing():
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main():
        task = asyncio.create_task(_await(FirstWait(cancelled(), lambda: None)))
        await started.wait()  # the work is inside its wait when the cancel comes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="boom"):
            await FirstWait(failing(), lambda: None)

    asyncio.run(main())
    assert seen == ["cancelled"]


async def _await(awaitable):
    return await awaitable


def test_a_stalled_body_timer_never_swallows_another_cancellation():
    """The idle timer and an outside cancel land in the same loop step: the request still ends cancelled."""
    from pollux.body_timeout import BodyIdleTimeout

    async def main():
        loop = asyncio.get_running_loop()
        reached = []

        async def receive():
            loop.call_later(0.05, task.cancel)  # due with the 0.05 s idle timer
            await asyncio.Event().wait()

        async def app(scope, receive, send):
            await receive()
            await asyncio.sleep(0.2)
            reached.append("ran on after a cancel")

        task = asyncio.create_task(BodyIdleTimeout(app, 0.05)({"type": "http", "method": "POST", "path": "/"},
                                                              receive, None))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reached == []

    asyncio.run(main())
