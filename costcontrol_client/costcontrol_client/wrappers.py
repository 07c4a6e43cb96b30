"""Wrappers around the OpenAI and Anthropic SDK clients that record every priced call.

`wrap_openai(OpenAI(...), cc)` returns a proxy: attribute access, calls and results are the
SDK's own, except that the calls below also `cc.record(...)` one event (never blocking,
never raising into the caller; a recording failure is logged):

    openai:    chat.completions.create/parse, responses.create/parse      -> chat
               embeddings.create                                          -> embedding
               images.generate/edit/create_variation                      -> image_generation
               audio.transcriptions.create                                -> audio_transcription
    anthropic: messages.create, messages.stream, beta.messages.create/stream -> chat

Quantities follow the ledger's billing convention (see the costcontrol README): input tokens
are the uncached ones, output tokens exclude reasoning tokens (OpenAI counts them inside
completion_tokens), so no token is priced twice.

Streams (`stream=True`) come back wrapped: iterating passes every chunk through unchanged;
when the stream ends, is closed or is left, the usage it carried is recorded (OpenAI: the
final chunk with `stream_options={"include_usage": True}`, or the responses API's
`response.completed`; Anthropic: message_start + message_delta). A stream that carried no
usage is recorded with `usage_unavailable: true`, so it shows as unpriced, never as free.

A call that raises the SDK's RateLimitError (or any API error with status 429) is recorded
with outcome "rate_limited", any other SDK API error with outcome "error" (no quantities:
a refused call is not billed); the exception is re-raised unchanged. Exceptions that are not
the provider's answer (a TypeError in the arguments, KeyboardInterrupt) record nothing.

Async clients (AsyncOpenAI, AsyncAnthropic) are wrapped the same way. Not recorded:
`with_raw_response` / `with_streaming_response` calls and the OpenAI `.stream()` helpers.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

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
ANTHROPIC_ROUTES: dict[tuple[str, ...], str] = {
    ("messages", "create"): "chat",
    ("messages", "stream"): "chat",
    ("beta", "messages", "create"): "chat",
    ("beta", "messages", "stream"): "chat",
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


def openai_quantities(operation: str, usage: Any, response: Any = None) -> dict[str, Any] | None:
    """The event's quantities from an OpenAI response's usage; None when it reported none."""
    if operation == "image_generation":
        data = _get(response, "data")
        return {"images": len(data)} if data is not None else None
    if usage is None:
        return None
    if operation == "embedding":
        tokens = _get(usage, "prompt_tokens")
        tokens = _get(usage, "input_tokens") if tokens is None else tokens
        tokens = _get(usage, "total_tokens") if tokens is None else tokens
        return None if tokens is None else {"embedding_tokens": _count(tokens)}
    if operation == "audio_transcription" and _get(usage, "type") == "duration":
        try:
            seconds = Decimal(str(_get(usage, "seconds"))).quantize(Decimal("0.000001"))
        except (InvalidOperation, ValueError):
            return None
        return {"seconds": str(seconds)}
    # chat.completions: prompt/completion tokens; responses (and token-billed audio): input/output.
    prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
    input_details, output_details = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
    if prompt is None and completion is None:
        prompt, completion = _get(usage, "input_tokens"), _get(usage, "output_tokens")
        input_details, output_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    if prompt is None and completion is None:
        return None
    cached = _count(_get(input_details, "cached_tokens"))
    reasoning = _count(_get(output_details, "reasoning_tokens"))
    return {
        "input_tokens": max(_count(prompt) - cached, 0),
        "cached_input_tokens": cached,
        "output_tokens": max(_count(completion) - reasoning, 0),
        "reasoning_tokens": reasoning,
    }


def anthropic_quantities(operation: str, usage: Any, response: Any = None) -> dict[str, Any] | None:
    """Anthropic already reports input_tokens without cache reads and writes."""
    if usage is None or (_get(usage, "input_tokens") is None and _get(usage, "output_tokens") is None):
        return None
    return {
        "input_tokens": _count(_get(usage, "input_tokens")),
        "output_tokens": _count(_get(usage, "output_tokens")),
        "cached_input_tokens": _count(_get(usage, "cache_read_input_tokens")),
        "cache_write_tokens": _count(_get(usage, "cache_creation_input_tokens")),
    }


def _image_variant(kwargs: dict[str, Any]) -> str:
    """The catalog's image variant, e.g. quality="hd", size="1024x1024" -> "hd/1024-x-1024"."""
    parts = []
    quality, size = kwargs.get("quality"), kwargs.get("size")
    if isinstance(quality, str) and quality and quality != "auto":
        parts.append(quality.lower())
    if isinstance(size, str) and size and size != "auto":
        parts.append(size.lower().replace("x", "-x-"))
    return "/".join(parts)


@dataclass
class _StreamState:
    """What a stream told us so far."""

    model: str | None = None
    usage: Any = None
    anthropic_usage: dict[str, Any] = field(default_factory=dict)


def _observe_openai(state: _StreamState, chunk: Any) -> None:
    model = _get(chunk, "model")
    if isinstance(model, str) and model:
        state.model = model
    usage = _get(chunk, "usage")
    if usage is not None:
        state.usage = usage
    response = _get(chunk, "response")  # responses API: response.created ... response.completed
    if response is not None and not isinstance(response, str | bytes):
        model = _get(response, "model")
        if isinstance(model, str) and model:
            state.model = model
        if _get(response, "usage") is not None:
            state.usage = _get(response, "usage")


_ANTHROPIC_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _observe_anthropic(state: _StreamState, event: Any) -> None:
    kind = _get(event, "type")
    if kind == "message_start":
        message = _get(event, "message")
        model = _get(message, "model")
        if isinstance(model, str) and model:
            state.model = model
        usage = _get(message, "usage")
    elif kind == "message_delta":
        usage = _get(event, "usage")  # cumulative counts; output_tokens at least
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
    quantities: Callable[[str, Any, Any], dict[str, Any] | None]
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
    ) -> None:
        try:
            event: dict[str, Any] = {
                "provider": self.provider.name,
                "model": model if isinstance(model, str) and model else (kwargs.get("model") or "unknown"),
                "operation": operation,
                "outcome": outcome,
                "duration_ms": max(0, int((time.perf_counter() - started) * 1000)),
                **self.context,
            }
            if operation == "image_generation" and (variant := _image_variant(kwargs)):
                event["variant"] = variant
            if usage_unavailable:
                event["usage_unavailable"] = True
            elif quantities:
                event.update(quantities)
            self.costcontrol.record(**event)
        except Exception:  # recording must never break the caller's model call
            logger.exception("costcontrol: could not record a %s %s call", self.provider.name, operation)

    def succeeded(self, operation: str, kwargs: dict[str, Any], started: float, response: Any) -> None:
        quantities = self.provider.quantities(operation, _get(response, "usage"), response)
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
        quantities = self.provider.quantities(operation, state.usage, None) if state.usage is not None else None
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
            return self._finish(result, operation, kwargs, started)

        call.__name__ = getattr(method, "__name__", "call")
        call.__doc__ = getattr(method, "__doc__", None)
        call.__wrapped__ = method  # type: ignore[attr-defined]
        return call

    def _finish(self, result: Any, operation: str, kwargs: dict[str, Any], started: float) -> Any:
        if isinstance(result, self.provider.stream_types):
            if hasattr(type(result), "__anext__"):
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
        return self._finish(result, operation, kwargs, started)


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
    return _Proxy(openai_client, recorder)


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
