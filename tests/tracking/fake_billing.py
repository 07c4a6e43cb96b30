"""The OpenAI organization Costs API and the Anthropic Admin API cost report, on 127.0.0.1.

Both speak their documented formats: daily buckets of the requested range, each with its results, cut into
pages of `page_size` results (a day's results continue on the next page in a bucket of the same day), with
``has_more`` / ``next_page`` cursors. The results of a day are set per API (``openai[day]``,
``anthropic[day]``) as the provider would write them: OpenAI's ``amount.value`` a JSON number, Anthropic's
``amount`` a string in cents. A test scripts trouble per page number (``fail_pages = {2: [500]}``: the next
answer to a page 2 is a 500), a Retry-After for its 429s, buckets to leave out (``missing_days``), and a
bucket of a day not over yet added to every answer (``partial_day``, as the APIs report today so far).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_http import JsonHandler, LocalHttpServer

OPENAI_KEY = "sk-admin-openai-fake-0123456789"
ANTHROPIC_KEY = "sk-ant-admin01-fake-9876543210"


class FakeBilling(LocalHttpServer):
    def __init__(self) -> None:
        self.openai: dict[date, list[dict[str, Any]]] = {}
        self.anthropic: dict[date, list[dict[str, Any]]] = {}
        self.page_size = 2
        self.fail_pages: dict[int, list[int]] = {}
        self.retry_after = "1"
        self.missing_days: set[date] = set()
        self.partial_day: date | None = None
        self.bucket_edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda bucket: bucket
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        super().__init__(_Handler)

    def pages(self, results: dict[date, list[dict[str, Any]]], start: date, end: date) -> list[list[tuple[date, list]]]:
        """The days start .. end - 1 as pages of (day, results) buckets, at most page_size results a page."""
        pages: list[list[tuple[date, list]]] = [[]]
        count = 0
        day = start
        while day < end:
            if day not in self.missing_days:
                rows = results.get(day, [])
                if not rows:
                    pages[-1].append((day, []))
                for row in rows:
                    if count == self.page_size:
                        pages.append([])
                        count = 0
                    if not pages[-1] or pages[-1][-1][0] != day:
                        pages[-1].append((day, []))
                    pages[-1][-1][1].append(row)
                    count += 1
            day += timedelta(days=1)
        if self.partial_day is not None:
            pages[-1].append((self.partial_day, results.get(self.partial_day, [])))
        return pages


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _rfc3339(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


class _Handler(JsonHandler):
    state: FakeBilling

    def do_GET(self) -> None:
        state = self.state
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        state.requests.append((url.path, query, dict(self.headers)))
        cursor = query.get("page", [""])[0]
        number = int(cursor.removeprefix("cursor-")) if cursor else 1
        scripted = state.fail_pages.get(number)
        if scripted:
            status = scripted.pop(0)
            headers = {"Retry-After": state.retry_after} if status == 429 else {}
            return self._send(status, {"error": {"type": "server_error", "message": f"status {status}"}}, headers)
        if url.path == "/v1/organization/costs":
            if self.headers.get("Authorization") != f"Bearer {OPENAI_KEY}":
                return self._send(
                    401, {"error": {"message": "Invalid authorization header", "type": "invalid_request"}}
                )
            start = datetime.fromtimestamp(int(query["start_time"][0]), UTC).date()
            end = datetime.fromtimestamp(int(query["end_time"][0]), UTC).date()
            pages = state.pages(state.openai, start, end)
            page = [
                state.bucket_edit(
                    {
                        "object": "bucket",
                        "start_time": int(_midnight(day).timestamp()),
                        "end_time": int(_midnight(day + timedelta(days=1)).timestamp()),
                        "results": rows,
                    }
                )
                for day, rows in pages[number - 1]
            ]
            more = number < len(pages)
            body = {
                "object": "page",
                "data": page,
                "has_more": more,
                "next_page": f"cursor-{number + 1}" if more else None,
            }
            return self._send(200, body)
        if url.path == "/v1/organizations/cost_report":
            if self.headers.get("x-api-key") != ANTHROPIC_KEY or self.headers.get("anthropic-version") != "2023-06-01":
                return self._send(
                    401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
                )
            start = date.fromisoformat(query["starting_at"][0][:10])
            end = date.fromisoformat(query["ending_at"][0][:10])
            pages = state.pages(state.anthropic, start, end)
            page = [
                state.bucket_edit(
                    {"starting_at": _rfc3339(day), "ending_at": _rfc3339(day + timedelta(days=1)), "results": rows}
                )
                for day, rows in pages[number - 1]
            ]
            more = number < len(pages)
            return self._send(
                200, {"data": page, "has_more": more, "next_page": f"cursor-{number + 1}" if more else None}
            )
        return self._send(404, {"error": {"message": "not found"}})


def openai_result(line_item: str | None, value: Any, project: str | None = "proj_abc", currency: str = "usd") -> dict:
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": currency},
        "line_item": line_item,
        "project_id": project,
    }


def anthropic_result(
    description: str | None,
    amount: Any,
    model: str | None = None,
    workspace: str | None = "wrkspc_01",
    currency: str = "USD",
) -> dict:
    return {
        "currency": currency,
        "amount": amount,
        "workspace_id": workspace,
        "description": description,
        "cost_type": "tokens" if model else "web_search",
        "context_window": "0-200k" if model else None,
        "model": model,
        "service_tier": "standard" if model else None,
        "token_type": "uncached_input_tokens" if model else None,
    }
