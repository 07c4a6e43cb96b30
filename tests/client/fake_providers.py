"""OpenAI and Anthropic, as far as the SDKs can tell, on 127.0.0.1.

Answers in the providers' formats: JSON bodies, SSE streams and JSONL batch results. The
requested model picks the answer: "rate-limited" -> 429, "broken" -> 500, anything else -> a
normal answer whose model is the request's plus a dated suffix (as the real APIs answer
"gpt-4o" with "gpt-4o-2024-08-06"), which shows the recorded model comes from the response.
The usage objects and the service tier a test wants are set on the FakeProviders instance
(openai_usage, responses_usage, image_usage, anthropic_usage, service_tier, batch_results).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.local_http import JsonHandler, LocalHttpServer

DATED = "-2024-08-06"

OPENAI_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 50,
    "total_tokens": 170,
    "prompt_tokens_details": {"cached_tokens": 20},
    "completion_tokens_details": {"reasoning_tokens": 15},
}
ANTHROPIC_START_USAGE = {
    "input_tokens": 25,
    "output_tokens": 1,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 40,
}
RESPONSES_USAGE = {
    "input_tokens": 300,
    "input_tokens_details": {"cached_tokens": 100},
    "output_tokens": 80,
    "output_tokens_details": {"reasoning_tokens": 30},
    "total_tokens": 380,
}


class FakeProviders(LocalHttpServer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.openai_usage: dict[str, Any] = OPENAI_USAGE
        self.responses_usage: dict[str, Any] = RESPONSES_USAGE
        self.image_usage: dict[str, Any] | None = None  # gpt-image-* answer with token usage
        self.image_fields: dict[str, Any] = {}  # e.g. the size and quality gpt-image-1 says it used
        # message_start's usage; output_tokens: the total message_delta reports
        self.anthropic_usage: dict[str, Any] = {**ANTHROPIC_START_USAGE, "output_tokens": 15}
        self.service_tier: str | None = None  # OpenAI: on the answer; Anthropic: in usage
        self.batch_results: list[dict[str, Any]] = []  # Anthropic Message Batches results (JSONL lines)
        super().__init__(_Handler)


def sse(events: list[tuple[str | None, Any]]) -> Iterator[bytes]:
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        yield (f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode()


def openai_chat(model: str, usage: dict[str, Any], tier: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model + DATED,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
        **({"service_tier": tier} if tier else {}),
    }


def openai_chat_stream(
    model: str, include_usage: bool, usage: dict[str, Any], tier: str | None
) -> list[tuple[str | None, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767225600, "model": model + DATED}
    if tier:
        base["service_tier"] = tier
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
        (None, {**base, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
    ]
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return events


def openai_response(model: str, usage: dict[str, Any], tier: str | None) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1767225600,
        "status": "completed",
        "model": model + DATED,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        **({"service_tier": tier} if tier else {}),
    }


def openai_response_stream(response: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """response.created (no usage yet) ... response.completed (the whole response, usage included)."""
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    return [
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": started}),
        (
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hello",
                "logprobs": [],
            },
        ),
        ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": response}),
    ]


def anthropic_message(model: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model + DATED,
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage or {**ANTHROPIC_START_USAGE, "output_tokens": 15},
    }


def anthropic_stream(model: str, usage: dict[str, Any] | None) -> list[tuple[str | None, Any]]:
    """As the API streams usage: message_start has the input side (output_tokens 1); message_delta
    the cumulative output tokens and the server tools used."""
    message = {**anthropic_message(model), "content": [], "stop_reason": None}
    if usage is not None:
        message["usage"] = {k: v for k, v in usage.items() if k != "server_tool_use"} | {"output_tokens": 1}
    else:
        message.pop("usage")
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    }
    if usage is not None:
        delta["usage"] = {k: v for k, v in usage.items() if k in ("output_tokens", "server_tool_use")}
    return [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", delta),
        ("message_stop", {"type": "message_stop"}),
    ]


class _Handler(JsonHandler):
    state: FakeProviders
    protocol_version = "HTTP/1.1"
    timeout = 5

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "20")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in sse(events):
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.state.requests.append((path, None))
        prefix = "/v1/messages/batches/"
        if path.startswith(prefix) and path.endswith("/results"):
            data = "".join(json.dumps(line) + "\n" for line in self.state.batch_results).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/binary")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path.startswith(prefix):
            batch_id = path[len(prefix) :]
            count = len(self.state.batch_results)
            self._json(
                200,
                {
                    "id": batch_id,
                    "type": "message_batch",
                    "processing_status": "ended",
                    "request_counts": {"processing": 0, "succeeded": count, "errored": 0, "canceled": 0, "expired": 0},
                    "created_at": "2026-01-01T00:00:00Z",
                    "ended_at": "2026-01-01T01:00:00Z",
                    "expires_at": "2026-01-02T00:00:00Z",
                    "archived_at": None,
                    "cancel_initiated_at": None,
                    "results_url": f"{self.state.base}{prefix}{batch_id}/results",
                },
            )
        else:
            self._json(404, {"error": {"message": f"no route {path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        body = json.loads(raw) if is_json and raw else {}
        path = self.path.split("?", 1)[0]
        self.state.requests.append((path, body))
        model = body.get("model", "whisper-1")
        anthropic = path.endswith("/messages")
        if model == "rate-limited":
            if anthropic:
                self._json(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
            else:
                self._json(429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}})
            return
        if model == "broken":
            if anthropic:
                self._json(500, {"type": "error", "error": {"type": "api_error", "message": "boom"}})
            else:
                self._json(500, {"error": {"message": "boom", "type": "server_error", "code": None}})
            return
        state, tier = self.state, self.state.service_tier
        if path == "/v1/chat/completions":
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(openai_chat_stream(model, include, state.openai_usage, tier))
            else:
                self._json(200, openai_chat(model, state.openai_usage, tier))
        elif path == "/v1/responses":
            response = openai_response(model, state.responses_usage, tier)
            if body.get("stream"):
                self._stream(openai_response_stream(response))
            else:
                self._json(200, response)
        elif path == "/v1/embeddings":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    "model": model,
                    "usage": {"prompt_tokens": 8, "total_tokens": 8},
                },
            )
        elif path == "/v1/images/generations":
            count = int(body.get("n") or 1)
            answer = {"created": 1767225600, "data": [{"url": f"http://img/{i}.png"} for i in range(count)]}
            answer.update(state.image_fields)
            if state.image_usage is not None:
                answer["usage"] = state.image_usage
            self._json(200, answer)
        elif path == "/v1/audio/transcriptions":
            self._json(200, {"text": "hello", "usage": {"type": "duration", "seconds": 3.5}})
        elif path == "/v1/messages":
            if body.get("stream"):
                self._stream(anthropic_stream(model, None if model == "no-usage" else state.anthropic_usage))
            else:
                self._json(200, anthropic_message(model, state.anthropic_usage))
        else:
            self._json(404, {"error": {"message": f"no route {path}"}})
