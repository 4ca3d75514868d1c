"""The memory budget: claims fit or wait, and fail with OverBudget when nothing is given back in time."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pollux.admission import MemoryBudget, OverBudget


def test_claims_add_up_to_the_capacity() -> None:
    budget = MemoryBudget(100, wait_seconds=0)
    first = budget.take(60)
    with pytest.raises(OverBudget):
        budget.take(50)
    budget.give(first)
    with budget.held(100):
        assert budget.used == 100
    assert budget.used == 0 and budget.peak == 100


def test_a_claim_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100, wait_seconds=0)
    assert budget.take(10_000) == 100
    with pytest.raises(OverBudget):
        budget.take(1)


def test_a_waiting_thread_gets_what_another_gives_back() -> None:
    budget = MemoryBudget(100, wait_seconds=60)
    taken = budget.take(100)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(budget.take(70)))
    waiter.start()
    budget.give(taken)  # whether the waiter is already waiting or not, it then fits
    waiter.join(60)
    assert got == [70] and budget.used == 70


async def test_an_async_claim_waits_for_a_thread_to_give_back() -> None:
    budget = MemoryBudget(100, wait_seconds=60)
    taken = budget.take(100)
    claim = asyncio.create_task(budget.take_async(80))
    await asyncio.sleep(0)  # the claim finds the budget full and waits
    assert not claim.done()
    await asyncio.to_thread(budget.give, taken)
    assert await asyncio.wait_for(claim, 60) == 80


async def test_an_async_claim_that_never_fits_fails() -> None:
    budget = MemoryBudget(100, wait_seconds=0)
    budget.take(100)
    with pytest.raises(OverBudget, match="short of memory"):
        await budget.take_async(1)
