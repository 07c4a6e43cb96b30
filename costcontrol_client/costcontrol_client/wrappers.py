"""Wrappers around the OpenAI and Anthropic SDK clients that record every priced call.

`wrap_openai(OpenAI(...), cc)` returns a proxy: attribute access, calls and results are the
SDK's own, except that the calls below also `cc.record(...)` one event (never blocking,
never raising into the caller; a recording failure is logged):

    openai:    chat.completions.create/parse, responses.create/parse      -> chat
               embeddings.create                                          -> embedding
               images.generate/edit/create_variation                      -> image_generation
               audio.transcriptions.create                                -> audio_transcription
    anthropic: messages.create, messages.stream, beta.messages.create/stream -> chat
               messages.batches.results, beta.messages.batches.results   -> chat, tier "batch"

Quantities follow the ledger's billing convention (see the costcontrol README): they are
disjoint, so the counts a provider reports inside another are taken out of it (OpenAI's
cached, audio and image prompt tokens out of prompt_tokens; reasoning, audio and image
completion tokens out of completion_tokens), and no token is priced twice.

Streams (`stream=True`) come back wrapped: iterating passes every chunk through unchanged;
when the stream ends, is closed or is left, the usage it carried is recorded (OpenAI: the
final chunk with `stream_options={"include_usage": True}`, or the responses API's
`response.completed`; Anthropic: message_start + message_delta). A stream that carried no
usage is recorded with `usage_unavailable: true`, so it shows as unpriced, never as free.

A call that raises the SDK's RateLimitError (or any API error with status 429) is recorded
with outcome "rate_limited", any other SDK API error with outcome "error" (no quantities:
a refused call is not billed); the exception is re-raised unchanged. Exceptions that are not
the provider's answer (a TypeError in the arguments, KeyboardInterrupt) record nothing.

Anthropic Message Batches: `messages.batches.results(batch_id)` records each succeeded request as
it is read, at service tier "batch", keyed anthropic-batch/<batch id>/<custom_id> (reading the
results twice counts once); errored requests are recorded as errors, canceled and expired ones
not at all.

Each event's pricing fields come from the response (see openai_quantities, anthropic_quantities):
the service tier that served the call, cache reads and 5-minute/1-hour cache writes, audio and
image tokens in and out, reasoning tokens, web searches; images: gpt-image-* token usage, or for
DALL-E the images generated with the quality and size as the API applies them by default.
Where the call ran, as the price depends on it (the event's `region`): for OpenAI the client's
data-residency host (eu.api.openai.com -> "eu", us.api.openai.com -> "us"), for Anthropic the
response's usage.inference_geo; Anthropic's usage.speed ("fast") as `speed`.
`Client.receipts()` hands back what each wrapped call was priced at.

Async clients (AsyncOpenAI, AsyncAnthropic) are wrapped the same way. Not recorded:
`with_raw_response` / `with_streaming_response` calls and the OpenAI `.stream()` helpers.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .client import Client

logger = logging.getLogger("costcontrol_client")

OPENAI_ROUTES: dict[tuple[str, ...], str] = {
    ("chat", "completions", "create"): "chat",
    ("chat", "completions", "parse"): "chat",
    ("beta", "chat", "completions", "parse"): "chat",
    ("responses", "create"): "chat",
    ("responses", "parse"): "chat",
    ("embeddings", "create"): "embedding",
    ("images", "generate"): "image_generation",
    ("images", "edit"): "image_generation",
    ("images", "create_variation"): "image_generation",
    ("audio", "transcriptions", "create"): "audio_transcription",
}
# Message Batches results: each succeeded request is one event, billed at the batch tier.
BATCH_RESULTS = "batch_results"
ANTHROPIC_ROUTES: dict[tuple[str, ...], str] = {
    ("messages", "create"): "chat",
    ("messages", "stream"): "chat",
    ("beta", "messages", "create"): "chat",
    ("beta", "messages", "stream"): "chat",
    ("messages", "batches", "results"): BATCH_RESULTS,
    ("beta", "messages", "batches", "results"): BATCH_RESULTS,
}
# Methods of the root client that return another client (new options): wrapped again.
_CLIENT_FACTORIES = frozenset({"with_options", "copy"})


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model (attribute) or of a plain dict; None when absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def openai_quantities(
    operation: str, usage: Any, response: Any = None, request: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The event's pricing fields (the ledger's disjoint quantities, service tier, image variant)
    from an OpenAI response and its request; None when it reported no usage.

    chat.completions: input_tokens = prompt_tokens - cached - cache writes - audio - image;
    output_tokens = completion_tokens - reasoning - audio - image (OpenAI counts those inside).
    """
    request = request or {}
    tier = _get(response, "service_tier")
    fields: dict[str, Any] = {"service_tier": tier} if isinstance(tier, str) and tier else {}
    if operation == "image_generation":
        return _openai_image(usage, response, request)
    if usage is None:
        return None
    if operation == "embedding":
        tokens = _get(usage, "prompt_tokens")
        tokens = _get(usage, "input_tokens") if tokens is None else tokens
        tokens = _get(usage, "total_tokens") if tokens is None else tokens
        return None if tokens is None else {**fields, "embedding_tokens": _count(tokens)}
    if operation == "audio_transcription" and _get(usage, "type") == "duration":
        try:
            seconds = Decimal(str(_get(usage, "seconds"))).quantize(Decimal("0.000001"))
        except (InvalidOperation, ValueError):
            return None
        return {**fields, "seconds": str(seconds)}
    # chat.completions: prompt/completion tokens; responses (and token-billed audio): input/output.
    prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
    input_details, output_details = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
    if prompt is None and completion is None:
        prompt, completion = _get(usage, "input_tokens"), _get(usage, "output_tokens")
        input_details, output_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    if prompt is None and completion is None:
        return None
    cached = _count(_get(input_details, "cached_tokens"))
    cache_write = _count(_get(input_details, "cache_write_tokens"))
    audio_in = _count(_get(input_details, "audio_tokens"))
    image_in = _count(_get(input_details, "image_tokens"))
    reasoning = _count(_get(output_details, "reasoning_tokens"))
    audio_out = _count(_get(output_details, "audio_tokens"))
    image_out = _count(_get(output_details, "image_tokens"))
    quantities = {
        "input_tokens": max(_count(prompt) - cached - cache_write - audio_in - image_in, 0),
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
        "input_audio_tokens": audio_in,
        "input_image_tokens": image_in,
        "output_tokens": max(_count(completion) - reasoning - audio_out - image_out, 0),
        "reasoning_tokens": reasoning,
        "output_audio_tokens": audio_out,
        "output_image_tokens": image_out,
    }
    return {**fields, **{name: value for name, value in quantities.items() if value or name in _ALWAYS}}


# Sent even when zero: an event that says "0 output tokens" reads better than one that says nothing.
_ALWAYS = frozenset({"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"})

# What the Images API applies when the request leaves a parameter out (or says "auto").
IMAGE_DEFAULT_MODEL = "dall-e-2"
_IMAGE_DEFAULTS: dict[str, tuple[str, str]] = {  # model family -> (quality, size)
    "dall-e-3": ("standard", "1024x1024"),
    "dall-e-2": ("", "1024x1024"),  # one quality: the catalog's dall-e-2 variants are sizes only
}


def _openai_image(usage: Any, response: Any, request: dict[str, Any]) -> dict[str, Any] | None:
    """gpt-image-*: the token usage the response carries (text and image tokens in, image tokens
    out). DALL-E (no usage): the images generated, priced per image by quality and size, with the
    API's defaults for what the request left out (dall-e-3: standard, 1024x1024)."""
    model = request.get("model") or IMAGE_DEFAULT_MODEL
    fields: dict[str, Any] = {} if request.get("model") else {"model": model}
    variant = _image_variant(str(model), request, response)
    if variant:
        fields["variant"] = variant
    if usage is not None and (_get(usage, "input_tokens") is not None or _get(usage, "output_tokens") is not None):
        input_details, output_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
        image_in = _count(_get(input_details, "image_tokens"))
        cached = _count(_get(input_details, "cached_tokens"))
        text_in = _get(input_details, "text_tokens")
        text_in = (
            _count(text_in) - cached if text_in is not None else _count(_get(usage, "input_tokens")) - image_in - cached
        )
        output = _count(_get(usage, "output_tokens"))
        text_out = _count(_get(output_details, "text_tokens"))
        image_out = _get(output_details, "image_tokens")
        image_out = _count(image_out) if image_out is not None else output - text_out
        quantities = {
            "input_tokens": max(text_in, 0),
            "cached_input_tokens": cached,
            "input_image_tokens": image_in,
            "output_tokens": text_out,
            "output_image_tokens": max(image_out, 0),
        }
        return {**fields, **{name: value for name, value in quantities.items() if value}}
    data = _get(response, "data")
    return {**fields, "images": len(data)} if data is not None else None


def _image_variant(model: str, request: dict[str, Any], response: Any) -> str:
    """The catalog's image variant: quality="hd", size="1024x1024" -> "hd/1024-x-1024" (the catalog key
    "hd/1024-x-1024/dall-e-3" splits into that variant and the model)."""
    family = next((name for name in _IMAGE_DEFAULTS if model.startswith(name)), None)
    default_quality, default_size = _IMAGE_DEFAULTS.get(family or "", ("", ""))

    def chosen(name: str, default: str) -> str:
        for value in (request.get(name), _get(response, name)):
            if isinstance(value, str) and value and value != "auto":
                return value.lower()
        return default

    quality = "" if family == "dall-e-2" else chosen("quality", default_quality)
    size = chosen("size", default_size)
    return "/".join(part for part in (quality, size.replace("x", "-x-")) if part)


def anthropic_quantities(
    operation: str, usage: Any, response: Any = None, request: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Anthropic reports input_tokens without cache reads and writes already; cache writes are split
    by lifetime (cache_creation.ephemeral_5m/1h_input_tokens; without the split,
    cache_creation_input_tokens are 5-minute writes); the tier that served it is usage.service_tier,
    where it ran usage.inference_geo (the region: "us" costs more on some models), its speed usage.speed."""
    if usage is None or (_get(usage, "input_tokens") is None and _get(usage, "output_tokens") is None):
        return None
    creation = _get(usage, "cache_creation")
    if creation is not None:
        write_5m = _count(_get(creation, "ephemeral_5m_input_tokens"))
        write_1h = _count(_get(creation, "ephemeral_1h_input_tokens"))
    else:
        write_5m, write_1h = _count(_get(usage, "cache_creation_input_tokens")), 0
    fields: dict[str, Any] = {
        "input_tokens": _count(_get(usage, "input_tokens")),
        "output_tokens": _count(_get(usage, "output_tokens")),
        "cached_input_tokens": _count(_get(usage, "cache_read_input_tokens")),
        "cache_write_tokens": write_5m,
    }
    if write_1h:
        fields["cache_write_1h_tokens"] = write_1h
    searches = _count(_get(_get(usage, "server_tool_use"), "web_search_requests"))
    if searches:
        fields["web_searches"] = searches
    tier = _get(usage, "service_tier")
    if isinstance(tier, str) and tier:
        fields["service_tier"] = tier
    for name, field_name in (("inference_geo", "region"), ("speed", "speed")):
        value = _get(usage, name)
        if isinstance(value, str) and value:
            fields[field_name] = value
    return fields


@dataclass
class _StreamState:
    """What a stream told us so far."""

    model: str | None = None
    usage: Any = None
    service_tier: str | None = None
    anthropic_usage: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> dict[str, Any]:
        """What the quantity functions read from a response besides its usage."""
        return {"service_tier": self.service_tier} if self.service_tier else {}


def _observe_openai(state: _StreamState, chunk: Any) -> None:
    model = _get(chunk, "model")
    if isinstance(model, str) and model:
        state.model = model
    usage = _get(chunk, "usage")
    if usage is not None:
        state.usage = usage
    tier = _get(chunk, "service_tier")
    if isinstance(tier, str) and tier:
        state.service_tier = tier
    response = _get(chunk, "response")  # responses API: response.created ... response.completed
    if response is not None and not isinstance(response, str | bytes):
        model = _get(response, "model")
        if isinstance(model, str) and model:
            state.model = model
        if _get(response, "usage") is not None:
            state.usage = _get(response, "usage")
        tier = _get(response, "service_tier")
        if isinstance(tier, str) and tier:
            state.service_tier = tier


_ANTHROPIC_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "server_tool_use",
    "service_tier",
    "inference_geo",
    "speed",
)


def _observe_anthropic(state: _StreamState, event: Any) -> None:
    kind = _get(event, "type")
    if kind == "message_start":
        message = _get(event, "message")
        model = _get(message, "model")
        if isinstance(model, str) and model:
            state.model = model
        usage = _get(message, "usage")
    elif kind == "message_delta":
        usage = _get(event, "usage")  # cumulative counts (output_tokens at least): the last value wins
    else:
        return
    for name in _ANTHROPIC_USAGE_FIELDS:
        value = _get(usage, name)
        if value is not None:
            state.anthropic_usage[name] = value
    if state.anthropic_usage:
        state.usage = state.anthropic_usage


@dataclass(frozen=True)
class _Provider:
    name: str
    routes: dict[tuple[str, ...], str]
    quantities: Callable[[str, Any, Any, dict[str, Any]], dict[str, Any] | None]
    observe: Callable[[_StreamState, Any], None]
    stream_types: tuple[type, ...]
    api_error: type[BaseException]
    rate_limit_error: type[BaseException]
    client_types: tuple[type, ...]

    @property
    def prefixes(self) -> frozenset[tuple[str, ...]]:
        return frozenset(route[:i] for route in self.routes for i in range(1, len(route)))


class _Recorder:
    """Turns one SDK call into one costcontrol event."""

    def __init__(
        self,
        provider: _Provider,
        costcontrol: Client,
        *,
        service: str | None,
        subject: str | None,
        job: str | None,
        tags: dict[str, str] | None,
    ) -> None:
        self.provider = provider
        self.prefixes = provider.prefixes
        self.costcontrol = costcontrol
        self.context: dict[str, Any] = {
            name: value for name, value in (("service", service), ("subject", subject), ("job", job)) if value
        }
        if tags:
            self.context["tags"] = dict(tags)

    def outcome_of(self, exc: BaseException) -> str | None:
        if isinstance(exc, self.provider.rate_limit_error) or getattr(exc, "status_code", None) == 429:
            return "rate_limited"
        if isinstance(exc, self.provider.api_error):
            return "error"
        return None  # not the provider's answer: nothing was billed, nothing to record

    def emit(
        self,
        *,
        operation: str,
        kwargs: dict[str, Any],
        started: float,
        model: Any = None,
        quantities: dict[str, Any] | None = None,
        outcome: str = "success",
        usage_unavailable: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        try:
            event: dict[str, Any] = {
                "provider": self.provider.name,
                "model": model if isinstance(model, str) and model else (kwargs.get("model") or "unknown"),
                "operation": operation,
                "outcome": outcome,
                **self.context,
            }
            if started:
                event["duration_ms"] = max(0, int((time.perf_counter() - started) * 1000))
            if usage_unavailable:
                event["usage_unavailable"] = True
            elif quantities:
                event.update(quantities)
            if extra:
                event.update(extra)
        except Exception:  # recording must never break the caller's model call
            logger.exception("costcontrol: could not record a %s %s call", self.provider.name, operation)
            return
        try:
            self.costcontrol.record(**event)
        except (ValueError, TypeError) as exc:  # refused (e.g. another service): kept, as a server rejection is
            logger.error("costcontrol: could not record a %s %s call: %s", self.provider.name, operation, exc)
            self.costcontrol._dead_letter_refused(event, exc)
        except Exception:
            logger.exception("costcontrol: could not record a %s %s call", self.provider.name, operation)

    def succeeded(self, operation: str, kwargs: dict[str, Any], started: float, response: Any) -> None:
        quantities = self.provider.quantities(operation, _get(response, "usage"), response, kwargs)
        self.emit(
            operation=operation,
            kwargs=kwargs,
            started=started,
            model=_get(response, "model"),
            quantities=quantities,
            usage_unavailable=quantities is None,
        )

    def failed(self, operation: str, kwargs: dict[str, Any], started: float, exc: BaseException) -> None:
        outcome = self.outcome_of(exc)
        if outcome is not None:
            self.emit(operation=operation, kwargs=kwargs, started=started, outcome=outcome)

    def stream_ended(
        self, operation: str, kwargs: dict[str, Any], started: float, state: _StreamState, exc: BaseException | None
    ) -> None:
        outcome = "success" if exc is None else (self.outcome_of(exc) or "error")
        usage = state.usage
        quantities = self.provider.quantities(operation, usage, state.response, kwargs) if usage is not None else None
        # Tokens streamed before a failure were generated and may be billed: unpriced, not zero.
        self.emit(
            operation=operation,
            kwargs=kwargs,
            started=started,
            model=state.model,
            quantities=quantities,
            outcome=outcome,
            usage_unavailable=quantities is None,
        )

    def instrument(self, method: Callable[..., Any], operation: str, managed: bool) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            if managed:  # messages.stream(): the request runs on __enter__
                return _ManagedStream(method(*args, **kwargs), self, operation, kwargs, started)
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                self.failed(operation, kwargs, started, exc)
                raise
            if inspect.isawaitable(result):
                return self._finish_async(result, operation, kwargs, started)
            return self._finish(result, operation, kwargs, started, asynchronous=False)

        call.__name__ = getattr(method, "__name__", "call")
        call.__doc__ = getattr(method, "__doc__", None)
        call.__wrapped__ = method  # type: ignore[attr-defined]
        return call

    def instrument_batch_results(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """messages.batches.results(batch_id): the results pass through unchanged, each recorded as it
        is read (idempotency key anthropic-batch/<batch id>/<custom_id>: reading twice counts once)."""

        def call(message_batch_id: str, *args: Any, **kwargs: Any) -> Any:
            result = method(message_batch_id, *args, **kwargs)
            if inspect.isawaitable(result):
                return self._batch_results_async(result, message_batch_id)
            return _BatchResults(result, self, message_batch_id)

        call.__name__ = getattr(method, "__name__", "results")
        call.__doc__ = getattr(method, "__doc__", None)
        call.__wrapped__ = method  # type: ignore[attr-defined]
        return call

    async def _batch_results_async(self, awaitable: Any, batch_id: str) -> Any:
        return _AsyncBatchResults(await awaitable, self, batch_id)

    def batch_result(self, batch_id: str, item: Any) -> None:
        """One line of a batch's results: succeeded -> its usage at the batch tier; errored -> an
        error (not billed); canceled or expired requests never ran and are not recorded."""
        try:
            result = _get(item, "result")
            kind, custom_id = _get(result, "type"), _get(item, "custom_id")
            if kind not in ("succeeded", "errored"):
                return
            extra = {"idempotency_key": f"anthropic-batch/{batch_id}/{custom_id}", "service_tier": "batch"}
            if kind == "errored":
                self.emit(operation="chat", kwargs={}, started=0, outcome="error", extra=extra)
                return
            message = _get(result, "message")
            quantities = self.provider.quantities("chat", _get(message, "usage"), message, {})
        except Exception:  # recording must never break reading the results
            logger.exception("costcontrol: could not read a batch result of %s", batch_id)
            return
        self.emit(
            operation="chat",
            kwargs={},
            started=0,
            model=_get(message, "model"),
            quantities=quantities,
            usage_unavailable=quantities is None,
            extra=extra,
        )

    def _finish(
        self, result: Any, operation: str, kwargs: dict[str, Any], started: float, *, asynchronous: bool
    ) -> Any:
        if isinstance(result, self.provider.stream_types):
            # Async when the call was awaited (the AsyncOpenAI/AsyncAnthropic method), not when the stream
            # has __anext__: a tracing proxy around a sync Stream (Traceloop's ChatStream) defines both.
            if asynchronous:
                return _AsyncRecordingStream(result, self, operation, kwargs, started)
            return _RecordingStream(result, self, operation, kwargs, started)
        self.succeeded(operation, kwargs, started, result)
        return result

    async def _finish_async(self, awaitable: Any, operation: str, kwargs: dict[str, Any], started: float) -> Any:
        try:
            result = await awaitable
        except Exception as exc:
            self.failed(operation, kwargs, started, exc)
            raise
        return self._finish(result, operation, kwargs, started, asynchronous=True)


class _Proxy:
    """Stands for an SDK client or one of its resources; instruments the routed methods."""

    __slots__ = ("_cc_path", "_cc_recorder", "_cc_target")

    def __init__(self, target: Any, recorder: _Recorder, path: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "_cc_target", target)
        object.__setattr__(self, "_cc_recorder", recorder)
        object.__setattr__(self, "_cc_path", path)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cc_target, name)
        recorder = self._cc_recorder
        path = (*self._cc_path, name)
        operation = recorder.provider.routes.get(path)
        if operation == BATCH_RESULTS and callable(value):
            return recorder.instrument_batch_results(value)
        if operation is not None and callable(value):
            return recorder.instrument(value, operation, managed=name == "stream")
        if path in recorder.prefixes:
            return _Proxy(value, recorder, path)
        if not self._cc_path and name in _CLIENT_FACTORIES and callable(value):

            def rewrap(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                return _Proxy(result, recorder) if isinstance(result, recorder.provider.client_types) else result

            return rewrap
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cc_target, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._cc_target)

    def __repr__(self) -> str:
        return f"<costcontrol-recorded {self._cc_target!r}>"

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(wrapped, openai.OpenAI) stays true
        return type(self._cc_target)

    def __enter__(self) -> _Proxy:
        self._cc_target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cc_target.__exit__(*exc)

    async def __aenter__(self) -> _Proxy:
        await self._cc_target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cc_target.__aexit__(*exc)


class _StreamBase:
    def __init__(
        self, stream: Any, recorder: _Recorder, operation: str, kwargs: dict[str, Any], started: float
    ) -> None:
        self._cc_stream = stream
        self._cc_recorder = recorder
        self._cc_operation = operation
        self._cc_kwargs = kwargs
        self._cc_started = started
        self._cc_state = _StreamState()
        self._cc_recorded = False

    def _cc_observe(self, item: Any) -> None:
        try:
            self._cc_recorder.provider.observe(self._cc_state, item)
        except Exception:  # a chunk we do not understand must not break the stream
            logger.debug("costcontrol: could not read usage from a stream chunk", exc_info=True)

    def _cc_end(self, exc: BaseException | None) -> None:
        if self._cc_recorded:
            return
        self._cc_recorded = True
        self._cc_recorder.stream_ended(self._cc_operation, self._cc_kwargs, self._cc_started, self._cc_state, exc)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_cc_"):  # not set yet (a failed __init__): no recursion into the stream
            raise AttributeError(name)
        return getattr(self._cc_stream, name)

    def _cc_exit_error(self, exc: BaseException | None) -> BaseException | None:
        # Leaving a `with` on an exception: only the provider's errors make the call an error;
        # the caller's own exception in the loop body does not.
        return exc if exc is not None and self._cc_recorder.outcome_of(exc) else None

    def __del__(self) -> None:
        # A stream dropped half read was still generated: record what it carried.
        with contextlib.suppress(Exception):
            if not self._cc_recorded:
                self._cc_end(None)


class _RecordingStream(_StreamBase):
    """A sync SDK Stream that records its usage once it ends (exhausted, closed or left)."""

    def __iter__(self) -> _RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._cc_stream)
        except StopIteration:
            self._cc_end(None)
            raise
        except Exception as exc:
            self._cc_end(exc)
            raise
        self._cc_observe(item)
        return item

    def __enter__(self) -> _RecordingStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._cc_stream.close()
        finally:
            self._cc_end(self._cc_exit_error(exc[1]))

    def close(self) -> None:
        try:
            self._cc_stream.close()
        finally:
            self._cc_end(None)


class _AsyncRecordingStream(_StreamBase):
    """The AsyncStream counterpart."""

    def __aiter__(self) -> _AsyncRecordingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._cc_stream.__anext__()
        except StopAsyncIteration:
            self._cc_end(None)
            raise
        except Exception as exc:
            self._cc_end(exc)
            raise
        self._cc_observe(item)
        return item

    async def __aenter__(self) -> _AsyncRecordingStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._cc_stream.close()
        finally:
            self._cc_end(self._cc_exit_error(exc[1]))

    async def close(self) -> None:
        try:
            await self._cc_stream.close()
        finally:
            self._cc_end(None)


class _ManagedStream:
    """Anthropic's `messages.stream()` manager: records from the accumulated message on exit."""

    def __init__(
        self, manager: Any, recorder: _Recorder, operation: str, kwargs: dict[str, Any], started: float
    ) -> None:
        self._cc_manager = manager
        self._cc_recorder = recorder
        self._cc_operation = operation
        self._cc_kwargs = kwargs
        self._cc_started = started
        self._cc_stream: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_cc_"):
            raise AttributeError(name)
        return getattr(self._cc_manager, name)

    def _cc_exit_error(self, exc: BaseException | None) -> BaseException | None:
        return exc if exc is not None and self._cc_recorder.outcome_of(exc) else None

    def _cc_end(self, exc: BaseException | None) -> None:
        state = _StreamState()
        try:
            snapshot = self._cc_stream.current_message_snapshot  # asserts when no message_start came
        except (AssertionError, AttributeError):  # no message_start came: usage unavailable
            snapshot = None
        if snapshot is not None:
            state.model = _get(snapshot, "model")
            state.usage = _get(snapshot, "usage")
        self._cc_recorder.stream_ended(self._cc_operation, self._cc_kwargs, self._cc_started, state, exc)

    def __enter__(self) -> Any:
        try:
            self._cc_stream = self._cc_manager.__enter__()
        except Exception as exc:
            self._cc_recorder.failed(self._cc_operation, self._cc_kwargs, self._cc_started, exc)
            raise
        return self._cc_stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._cc_manager.__exit__(*exc)
        finally:
            self._cc_end(self._cc_exit_error(exc[1]))

    async def __aenter__(self) -> Any:
        try:
            self._cc_stream = await self._cc_manager.__aenter__()
        except Exception as exc:
            self._cc_recorder.failed(self._cc_operation, self._cc_kwargs, self._cc_started, exc)
            raise
        return self._cc_stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._cc_manager.__aexit__(*exc)
        finally:
            self._cc_end(self._cc_exit_error(exc[1]))


class _BatchResults:
    """A batch's results (JSONLDecoder) that records each result as it is read."""

    def __init__(self, results: Any, recorder: _Recorder, batch_id: str) -> None:
        self._cc_results = results
        self._cc_recorder = recorder
        self._cc_batch_id = batch_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_cc_"):
            raise AttributeError(name)
        return getattr(self._cc_results, name)

    def __iter__(self) -> Iterator[Any]:
        for item in self._cc_results:
            self._cc_recorder.batch_result(self._cc_batch_id, item)
            yield item

    def __next__(self) -> Any:
        item = next(self._cc_results)
        self._cc_recorder.batch_result(self._cc_batch_id, item)
        return item


class _AsyncBatchResults(_BatchResults):
    """The AsyncJSONLDecoder counterpart."""

    def __aiter__(self) -> _AsyncBatchResults:
        return self

    async def __anext__(self) -> Any:
        item = await self._cc_results.__anext__()
        self._cc_recorder.batch_result(self._cc_batch_id, item)
        return item


def wrap_openai(
    openai_client: Any,
    costcontrol_client: Client,
    *,
    service: str | None = None,
    subject: str | None = None,
    job: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """An OpenAI/AsyncOpenAI client that records each call's cost. Cheap: wrap per request for a per-user subject."""
    import openai

    provider = _Provider(
        name="openai",
        routes=OPENAI_ROUTES,
        quantities=openai_quantities,
        observe=_observe_openai,
        stream_types=(openai.Stream, openai.AsyncStream),
        api_error=openai.APIError,
        rate_limit_error=openai.RateLimitError,
        client_types=(openai.OpenAI, openai.AsyncOpenAI),
    )
    recorder = _Recorder(provider, costcontrol_client, service=service, subject=subject, job=job, tags=tags)
    region = openai_data_residency(openai_client)
    if region:
        recorder.context["region"] = region
    return _Proxy(openai_client, recorder)


# OpenAI's data-residency hosts (as LiteLLM infers data_residency from the api_base): calls there cost
# more on the models that say so (regional_processing_uplift_multiplier_<region>).
_OPENAI_RESIDENCY_HOSTS = {"eu.api.openai.com": "eu", "us.api.openai.com": "us"}


def openai_data_residency(openai_client: Any) -> str:
    """ "eu" or "us" when the client talks to OpenAI's EU or US data-residency host, else ""."""
    try:
        host = urlsplit(str(getattr(openai_client, "base_url", "") or "")).hostname or ""
    except ValueError:
        return ""
    return _OPENAI_RESIDENCY_HOSTS.get(host.lower(), "")


def wrap_anthropic(
    anthropic_client: Any,
    costcontrol_client: Client,
    *,
    service: str | None = None,
    subject: str | None = None,
    job: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """An Anthropic/AsyncAnthropic client that records each call's cost."""
    import anthropic

    provider = _Provider(
        name="anthropic",
        routes=ANTHROPIC_ROUTES,
        quantities=anthropic_quantities,
        observe=_observe_anthropic,
        stream_types=(anthropic.Stream, anthropic.AsyncStream),
        api_error=anthropic.APIError,
        rate_limit_error=anthropic.RateLimitError,
        client_types=(anthropic.Anthropic, anthropic.AsyncAnthropic),
    )
    recorder = _Recorder(provider, costcontrol_client, service=service, subject=subject, job=job, tags=tags)
    return _Proxy(anthropic_client, recorder)
