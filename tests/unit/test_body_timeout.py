"""`BodyIdleTimeout`'s whole-body deadline: a body trickling in, each piece well inside the idle limit, ends at the
deadline, and a body that came with its headers arms no timer. Over HTTP: tests/test_connections.py."""

import asyncio

from pollux.body_timeout import BodyIdleTimeout

SCOPE = {"type": "http", "method": "POST", "path": "/"}


def test_a_trickled_body_ends_at_the_total_deadline_not_the_idle_one():
    async def main():
        async def receive():
            await asyncio.sleep(0.01)  # due before the deadline's timer, armed after it: a piece always comes first
            return {"type": "http.request", "body": b"x", "more_body": True}

        got = []

        async def app(scope, receive, send):
            while (message := await receive())["type"] == "http.request":
                got.append(message)
            got.append(message)

        await asyncio.wait_for(BodyIdleTimeout(app, idle=60, total=0.2)(SCOPE, receive, None), 30)
        return got

    got = asyncio.run(main())
    assert got[-1] == {"type": "http.disconnect"} and got[0]["body"] == b"x", got


def test_only_a_read_that_waits_arms_a_timer_and_it_keeps_the_deadline():
    async def main(pause: bool):
        loop = asyncio.get_running_loop()
        armed = []
        call_later = loop.call_later

        def counting(delay, callback, *args, **kwargs):
            armed.append(delay)
            return call_later(delay, callback, *args, **kwargs)

        loop.call_later = counting

        async def receive():
            if pause:
                await asyncio.sleep(0)
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def app(scope, receive, send):
            assert (await receive())["body"] == b"{}"

        await BodyIdleTimeout(app, idle=60, total=5)(SCOPE, receive, None)
        return armed

    assert asyncio.run(main(pause=False)) == []
    armed = asyncio.run(main(pause=True))
    assert len(armed) == 1 and 0 < armed[0] <= 5, armed
