"""Typed errors of the synchronous calls, each carrying the server's code and message."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from time import time
from typing import Any


class CostcontrolError(Exception):
    """Base of every error this client raises for a failed call.

    `status` is the HTTP status (None when no response came), `code` and `message` are the
    server's (`{"code": ..., "message": ...}`), `errors` its per-field messages if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        errors: dict[str, Any] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.errors = errors
        self.body = body

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}: " if self.status else (f"{self.code}: " if self.code else "")
        suffix = f" {self.errors}" if self.errors else ""
        return f"{prefix}{self.message}{suffix}"


class InvalidRequest(CostcontrolError):
    """400/422: the server refused the request's content (`errors` names the fields)."""


class AuthError(CostcontrolError):
    """401 (missing or unknown API key) or 403 (the key may not do this)."""


class NotFound(CostcontrolError):
    """404: e.g. settling a reservation id the server does not know."""


class BudgetExceeded(CostcontrolError):
    """409 budget_exceeded: a reservation would take a hard-limited budget past its limit."""

    def __init__(self, message: str, *, available: Decimal | None, requested: Decimal | None, budget: Any, **kw: Any):
        super().__init__(message, **kw)
        self.available = available
        self.requested = requested
        self.budget = budget  # {"id": ..., "name": ...} as the server sent it


class RateLimited(CostcontrolError):
    """429: too many requests; `retry_after` is the server's Retry-After in seconds (or None)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Unavailable(CostcontrolError):
    """The server cannot answer now: 502/503/504 (`retry_after` when it said), or no connection at all."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(CostcontrolError):
    """Another 5xx: a fault on the server."""


class ServiceMismatch(ValueError):
    """`record()` refused an event whose `service` is not the API key's: the server would reject it.

    `field` is "service"; `service` is the event's, `key_service` the key's (from GET /api/v1/key).
    """

    field = "service"

    def __init__(self, message: str, *, service: str, key_service: str) -> None:
        super().__init__(message)
        self.service = service
        self.key_service = key_service


def _decimal_or_none(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time())


def error_from_response(status: int, body: Any, retry_after: float | None) -> CostcontrolError:
    """The typed error for a non-2xx answer; `body` is the decoded JSON (or text) the server sent."""
    data = body if isinstance(body, dict) else {}
    code = str(data.get("code") or "")
    message = str(data.get("message") or data.get("detail") or (body if isinstance(body, str) and body else ""))
    message = message or f"HTTP {status}"
    errors = data.get("errors") if isinstance(data.get("errors"), dict) else None
    kw: dict[str, Any] = {"status": status, "code": code, "errors": errors, "body": body}
    if status == 409 and code == "budget_exceeded":
        return BudgetExceeded(
            message,
            available=_decimal_or_none(data.get("available")),
            requested=_decimal_or_none(data.get("requested")),
            budget=data.get("budget"),
            **kw,
        )
    if status in (401, 403):
        return AuthError(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status in (400, 422):
        return InvalidRequest(message, **kw)
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kw)
    if status in (502, 503, 504):
        return Unavailable(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return CostcontrolError(message, **kw)
