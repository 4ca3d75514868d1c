"""disconnect.py: a client that goes away cancels its work, through the connection's notice (under `pollux serve`)
or, under another ASGI server, through a watcher reading receive(). The end-to-end cases (a real server, a real
client leaving) are in test_rest.py and test_upstream_vllm.py."""

import asyncio

import pytest
from starlette.requests import Request

from pollux.disconnect import SCOPE_KEY, ClientGone, Connection, StreamingResponse, until_disconnected


def _scope(connection: Connection | None) -> dict:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b"",
             "asgi": {"version": "3.0", "spec_version": "2.3"}}
    if connection is not None:
        scope[SCOPE_KEY] = connection
    return scope


async def _never_disconnects() -> dict:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _work(started: asyncio.Event, finished: list[str]) -> str:
    started.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        finished.append("cancelled")
        raise
    return "done"


async def test_a_lost_connection_cancels_the_work_without_a_watcher_task():
    connection = Connection()
    request = Request(_scope(connection), _never_disconnects)
    started, finished = asyncio.Event(), []
    tasks_before = len(asyncio.all_tasks())
    job = asyncio.create_task(until_disconnected(request, _work(started, finished)))
    await started.wait()
    assert len(asyncio.all_tasks()) == tasks_before + 1  # the job itself, nothing watching beside it
    connection.lose()
    with pytest.raises(ClientGone):
        await job
    assert finished == ["cancelled"]


async def test_work_that_ends_first_is_returned_and_unregistered():
    connection = Connection()
    request = Request(_scope(connection), _never_disconnects)

    async def quick() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await until_disconnected(request, quick()) == "answer"
    connection.lose()  # nothing is left to cancel: the current task goes on
    await asyncio.sleep(0)


async def test_a_connection_already_lost_does_not_start_the_work():
    connection = Connection()
    connection.lose()
    ran = []

    async def work() -> None:
        ran.append(1)

    with pytest.raises(ClientGone):
        await until_disconnected(Request(_scope(connection), _never_disconnects), work())
    assert ran == []


async def test_someone_elses_cancellation_is_not_taken_for_a_disconnect():
    connection = Connection()
    request = Request(_scope(connection), _never_disconnects)
    started, finished = asyncio.Event(), []
    job = asyncio.create_task(until_disconnected(request, _work(started, finished)))
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job


async def test_without_the_notice_a_watcher_reads_the_disconnect():
    disconnected = asyncio.Event()

    async def receive() -> dict:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    started, finished = asyncio.Event(), []
    job = asyncio.create_task(until_disconnected(Request(_scope(None), receive), _work(started, finished)))
    await started.wait()
    disconnected.set()
    with pytest.raises(ClientGone):
        await job
    assert finished == ["cancelled"]


async def test_a_stream_stops_and_closes_its_body_when_the_connection_is_lost():
    connection = Connection()
    sent: list[dict] = []
    closed = []
    first_sent = asyncio.Event()

    async def body():
        try:
            yield b"one"
            first_sent.set()
            await asyncio.sleep(30)
            yield b"two"
        finally:
            closed.append(1)

    async def send(message: dict) -> None:
        sent.append(message)

    response = StreamingResponse(body(), media_type="text/event-stream")
    job = asyncio.create_task(response(_scope(connection), _never_disconnects, send))
    await first_sent.wait()
    connection.lose()
    await job  # returns quietly: nobody is left to answer
    assert closed == [1]
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"one"]


async def test_a_stream_under_another_server_still_ends_normally():
    sent: list[dict] = []

    async def body():
        yield b"a"
        yield b"b"

    async def send(message: dict) -> None:
        sent.append(message)

    await StreamingResponse(body())(_scope(None), _never_disconnects, send)
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == b"ab"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
