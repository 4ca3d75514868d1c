"""The one error type: it renders as Gemini's `google.rpc.Status` JSON."""

from __future__ import annotations

from typing import Any

from .engines import errors as engine_errors

# HTTP code for each canonical status, as the real API pairs them.
_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

STATUSES = frozenset(_HTTP)


class ApiError(Exception):
    """An error the client sees: `{"error": {"code", "message", "status", "details"?}}`."""

    def __init__(self, status: str, message: str, *, code: int | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else _HTTP.get(status, 500)
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    # Constructors for the cases every route meets.
    @classmethod
    def invalid(cls, message: str, **kw: Any) -> ApiError:
        return cls("INVALID_ARGUMENT", message, **kw)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        return cls("NOT_FOUND", message)

    @classmethod
    def bad_request_fields(cls, violations: list[tuple[str | None, str]]) -> ApiError:
        """400 with a google.rpc.BadRequest detail, as the real API reports payload errors."""
        field_violations = []
        for field, description in violations:
            fv: dict[str, str] = {"description": description}
            if field:
                fv["field"] = field
            field_violations.append(fv)
        return cls("INVALID_ARGUMENT", "\n".join(d for _, d in violations), details=[
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": field_violations}])


def api_key_invalid() -> ApiError:
    message = "API key not valid. Please pass a valid API key."
    return ApiError("INVALID_ARGUMENT", message, details=[
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
    ])


def api_key_missing() -> ApiError:
    return ApiError("PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API.")


def model_not_found(model: str, version: str, method: str = "generateContent") -> ApiError:
    return ApiError.not_found(
        f"models/{model} is not found for API version {version}, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.")


def retry_info(seconds: float) -> dict[str, Any]:
    """google.rpc.RetryInfo: how long a client should wait before it tries again."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{text}s"}


def from_engine(exc: engine_errors.EngineError) -> ApiError:
    """An engine's error as Gemini reports it: the one place engine failures become the client's error."""
    if isinstance(exc, engine_errors.Scripted):
        return ApiError(exc.status, exc.message, code=exc.code)
    if isinstance(exc, (engine_errors.InvalidInput, engine_errors.Unsupported)):
        return ApiError.invalid(exc.message)
    if isinstance(exc, engine_errors.RetryLater):
        return ApiError("UNAVAILABLE", exc.message, details=[retry_info(exc.retry_after)])
    if isinstance(exc, engine_errors.Timeout):
        return ApiError("DEADLINE_EXCEEDED", exc.message)
    return ApiError("INTERNAL", exc.message)
