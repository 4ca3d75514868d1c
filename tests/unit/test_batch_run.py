"""A batch run's share of the process's places (`batch_concurrency`), without a server: a run that stops returns every
place it held, including those of requests cancelled before they started, and one waiting for a place stops waiting.
Found by the batch benchmark: cancelling several running batches at once lost places until no batch could run."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from pollux.batches.protocol import CANCELLED
from pollux.batches.run import Run
from pollux.store.records import BatchRecord

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record() -> BatchRecord:
    return BatchRecord("p", "b" * 36, "generate", "gemini-2.5-flash", "", "BATCH_STATE_RUNNING", None, 3, 0, {}, None,
                       None, False, None, NOW, NOW, None, NOW)


def new_run(places: asyncio.Semaphore) -> Run:
    async def answer(request: dict) -> dict:
        await asyncio.sleep(3600)  # never answers: the run is stopped first
        return {}

    return Run(None, None, places, record(), answer)  # type: ignore[arg-type] - no store: nothing is saved


def test_requests_cancelled_before_they_start_give_their_places_back():
    async def scenario() -> int:
        places = asyncio.Semaphore(2)
        run = new_run(places)
        for idx in range(2):
            assert await run._slot()
            task = asyncio.create_task(run._one(idx, {"r": {}}))
            run.tasks.add(task)
            task.add_done_callback(run._finished)
        run._halt(CANCELLED)  # both tasks are cancelled before their first step
        await asyncio.gather(*run.tasks, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run
        return places._value

    assert asyncio.run(scenario()) == 2


def test_a_run_waiting_for_a_place_stops_waiting_when_halted():
    async def scenario() -> tuple[bool, int, bool]:
        places = asyncio.Semaphore(1)
        other = new_run(places)
        assert await other._slot()  # another batch holds the only place
        run = new_run(places)
        waiting = asyncio.create_task(run._slot())
        await asyncio.sleep(0.01)
        run._halt(CANCELLED)
        got = await asyncio.wait_for(waiting, 5)
        places.release()  # the other batch's request ends
        free = await asyncio.wait_for(new_run(places)._slot(), 5)  # the place was not taken by the halted run
        return got, places._value, free

    assert asyncio.run(scenario()) == (False, 0, True)


def test_openai_status_follows_the_batch_through_its_end():
    from dataclasses import replace

    from pollux.openai.batches import batch_json
    from pollux.store.records import BatchCounts

    running = replace(record(), kind="chat", input_file="in", options={"endpoint": "/v1/chat/completions"})
    counts = BatchCounts(1, 0)
    assert batch_json(replace(running, state="BATCH_STATE_PENDING"), counts)["status"] == "validating"
    assert batch_json(running, counts)["status"] == "in_progress"
    assert batch_json(replace(running, cancel_requested=True), counts)["status"] == "cancelling"
    assert batch_json(replace(running, ending="BATCH_STATE_SUCCEEDED"), counts)["status"] == "finalizing"
    assert batch_json(replace(running, ending="BATCH_STATE_CANCELLED"), counts)["status"] == "cancelling"
    done = batch_json(replace(running, state="BATCH_STATE_SUCCEEDED", end_time=NOW, output_file="batch-x"), counts)
    assert (done["status"], done["completed_at"], done["output_file_id"]) == ("completed", int(NOW.timestamp()),
                                                                            "files/batch-x")
