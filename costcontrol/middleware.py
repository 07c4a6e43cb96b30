"""A request that fails because the database cannot be reached answers 503, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """Views outside the JSON API (the admin, its login, the dashboard) that raise OperationalError or
    InterfaceError (the server is down, restarting or refuses connections) answer 503 with a
    Retry-After header, logged as one warning line rather than a 500 with a traceback. The API
    (api/api.py) maps the same errors itself, in its JSON error format."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning(
            "%s %s failed on the database (%s: %s): answering 503",
            request.method,
            request.path,
            exception.__class__.__name__,
            str(exception).splitlines()[0] if str(exception) else "",
        )
        message = "the database is not available; retry later"
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            response: HttpResponse = JsonResponse({"code": "unavailable", "message": message}, status=503)
        else:
            response = HttpResponse(f"503 Service Unavailable: {message}\n", status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
