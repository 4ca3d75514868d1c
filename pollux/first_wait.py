"""Awaiting a coroutine, with a hook at its first suspension: what only matters while a coroutine waits (a watcher
task, a timer) is set up only if it does wait, and costs nothing when the answer is already there."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FirstWait(Generic[T]):
    """Awaits a coroutine like `await` does, calling `on_wait` once when the coroutine first suspends."""

    def __init__(self, coro: Coroutine[Any, Any, T], on_wait: Callable[[], None]) -> None:
        self.coro = coro
        self.on_wait: Callable[[], None] | None = on_wait

    def __await__(self) -> Generator[Any, Any, T]:
        step: Callable[[Any], Any] = self.coro.send
        arg: Any = None
        while True:
            try:
                signal = step(arg)
            except StopIteration as done:
                return done.value
            if self.on_wait is not None:
                self.on_wait()
                self.on_wait = None
            # What the task sends back, or throws in (a cancellation), goes on to the coroutine, as `await` does.
            try:
                arg, step = (yield signal), self.coro.send
            except GeneratorExit:
                self.coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, which decides
                arg, step = exc, self.coro.throw
