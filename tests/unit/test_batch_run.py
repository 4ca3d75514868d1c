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


class _FakeBatches:
    """The little of `store.batches` a run uses: results kept in memory."""

    def __init__(self, batch: BatchRecord) -> None:
        self.batch = batch
        self.saved: dict[int, str] = {}

    async def done(self, project_id: str, batch_id: str) -> set[int]:
        return set(self.saved)

    async def save(self, project_id: str, batch_id: str, results: list) -> bool:
        self.saved.update({r.idx: r.body for r in results})
        return True

    async def get(self, project_id: str, batch_id: str) -> BatchRecord:
        return self.batch

    async def counts(self, project_id: str, batch_ids: list[str]) -> dict:
        from pollux.store.records import BatchCounts
        return {batch_ids[0]: BatchCounts(len(self.saved), 0)}


class _FakeBlobs:
    def __init__(self, lines: list[bytes]) -> None:
        self.data = b"".join(line + b"\n" for line in lines)

    async def read(self, key: str):
        for i in range(0, len(self.data), 7):  # small blocks: lines arrive in pieces
            yield self.data[i:i + 7]


def test_a_store_failure_fails_the_run_not_the_request():
    """A request that meets an unreachable store is not a result: the run raises (its job is tried again later, from
    the results saved), instead of ending the batch with that request missing."""
    from pollux.store import StoreUnavailable

    async def scenario():
        batch = record()
        batches = _FakeBatches(batch)

        async def answer(request: dict) -> dict:
            if request["n"] == 1:
                raise StoreUnavailable("database gone")
            return {"n": request["n"]}

        lines = [b'{"r": {"n": %d}}' % n for n in range(3)]
        run = Run(type("S", (), {"batches": batches})(), _FakeBlobs(lines), asyncio.Semaphore(1), batch, answer)
        try:
            await run.go()
        except StoreUnavailable:
            return "raised", sorted(batches.saved)
        return "returned", sorted(batches.saved)

    outcome, saved = asyncio.run(scenario())
    assert outcome == "raised" and 1 not in saved and 0 in saved


def test_a_complete_run_succeeds_with_every_result():
    async def scenario():
        batch = record()
        batches = _FakeBatches(batch)

        async def answer(request: dict) -> dict:
            return {"n": request["n"]}

        lines = [b'{"r": {"n": %d}}' % n for n in range(3)]
        outcome = await Run(type("S", (), {"batches": batches})(), _FakeBlobs(lines), asyncio.Semaphore(2), batch,
                            answer).go()
        return outcome, sorted(batches.saved)

    assert asyncio.run(scenario()) == ("BATCH_STATE_SUCCEEDED", [0, 1, 2])
