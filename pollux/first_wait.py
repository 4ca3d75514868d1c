"""Awaiting with a hook at the first suspension: what only matters while something waits (a watcher task, a timer)
is set up only if it does wait, and costs nothing when the answer is already there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FirstWait(Generic[T]):
    """Awaits like `await` does, calling `on_wait` once when the awaitable first suspends."""

    def __init__(self, awaitable: Awaitable[T], on_wait: Callable[[], None]) -> None:
        self.steps = awaitable.__await__()
        self.on_wait: Callable[[], None] | None = on_wait

    def __await__(self) -> Generator[Any, Any, T]:
        steps = self.steps
        step: Callable[[Any], Any] = steps.send
        arg: Any = None
        while True:
            try:
                signal = step(arg)
            except StopIteration as done:
                return done.value
            if self.on_wait is not None:
                self.on_wait()
                self.on_wait = None
            # What the task sends back, or throws in (a cancellation), goes on to the awaitable, as `await` does.
            try:
                arg, step = (yield signal), steps.send
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the awaitable, which decides
                arg, step = exc, steps.throw
