"""What an engine raises when a request fails. Engines know nothing of HTTP or Gemini's error JSON: the services map
these to Gemini's errors in one place (`pollux.errors.from_engine`).

    InvalidInput  the request cannot be served as given (a schema that cannot compile, unreadable media)  400
    Unsupported   the engine lacks a feature the request needs; the message names the feature            400
    Overloaded    too much work queued; try again after `retry_after` seconds                            503
    Unavailable   the engine (an upstream server) cannot be reached now; `retry_after` as well           503
    Timeout       the engine took longer than its deadline                                               504
    Failure       anything else that went wrong inside the engine                                        500

Both kinds of 503 (`RetryLater`) carry Gemini's RetryInfo.
"""

from __future__ import annotations


class EngineError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(EngineError):
    pass


class Unsupported(EngineError):
    pass


class RetryLater(EngineError):
    """A failure that passes: the client should try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RetryLater):
    def __init__(self, message: str = "The model is overloaded. Please try again later.",
                 retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after)


class Unavailable(RetryLater):
    pass


class Timeout(EngineError):
    pass


class Failure(EngineError):
    pass


class Scripted(EngineError):
    """An error a test fixture scripts for the emulator to answer with, status and code as the fixture names them."""

    def __init__(self, status: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
