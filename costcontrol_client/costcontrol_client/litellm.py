"""LiteLLM: record every call LiteLLM makes, and refuse calls when a hard budget has no headroom.

    import litellm
    from costcontrol_client import Client
    from costcontrol_client.litellm import CostcontrolLogger

    litellm.callbacks = [CostcontrolLogger(client=Client(url, api_key, service="search"))]

The proxy loads the module-level `proxy_handler_instance` (config.yaml:
`litellm_settings: {callbacks: costcontrol_client.litellm.proxy_handler_instance}`); it is built on
first access from COSTCONTROL_URL, COSTCONTROL_API_KEY and COSTCONTROL_SERVICE (optional).

Each call LiteLLM reports (success or failure, sync or async; a stream once, with the usage LiteLLM
assembled when it ended) becomes one event on the client's batching queue: provider (LiteLLM's
custom_llm_provider: its names are the catalog's), model (the provider's answer), operation, the
ledger's disjoint quantities (`wrappers.openai_quantities`: LiteLLM hands every provider's usage over
in OpenAI's shape), outcome (success, error, rate_limited for a RateLimitError or a 429) and duration
(end_time - start_time). Its idempotency key is `litellm/<litellm_call_id>` (a failure:
`litellm/<id>/<outcome>`, so a call retried under the same id after a 429 is two events, not a
conflict): LiteLLM reporting a call twice counts once. LiteLLM's own `response_cost` goes along as
`reported_amount` (by "litellm"): the server prices the usage itself and keeps LiteLLM's figure
beside its own as a cross-check, flagging the entry where the two differ.

Not recorded: a response served from LiteLLM's cache (the provider billed nothing), and a call that
LiteLLM refused with BudgetExceededError before reaching the provider.

`CostcontrolLogger` imports `litellm`; the rest of the client does not need it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from .client import Client
from .errors import CostcontrolError, Unavailable
from .wrappers import _count, _get, openai_quantities

logger = logging.getLogger("costcontrol_client")

# LiteLLM's call types -> the ledger's operations (the wrappers' names). Others keep LiteLLM's name.
OPERATIONS: dict[str, str] = {
    "completion": "chat",
    "acompletion": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "anthropic_messages": "chat",
    "text_completion": "completion",
    "atext_completion": "completion",
    "embedding": "embedding",
    "aembedding": "embedding",
    "image_generation": "image_generation",
    "aimage_generation": "image_generation",
    "image_edit": "image_generation",
    "aimage_edit": "image_generation",
    "transcription": "audio_transcription",
    "atranscription": "audio_transcription",
}
# What the pre-call check asks by default: the budgets of the call's service and of its end user.
DEFAULT_CHECK_SCOPES: tuple[str, ...] = ("service:{service}", "subject:{subject}")
# After costcontrol could not be reached, checks are not tried again for this long (or Retry-After):
# a proxy would otherwise wait for the client's timeout on every call while costcontrol is down.
CHECK_PAUSE_SECONDS = 30.0
# The server's limits on tags (tracking.events): more would get the whole event rejected.
_TAGS_MAX, _TAG_KEY_MAX, _TAG_VALUE_MAX = 20, 50, 100


class CostcontrolLogger(CustomLogger):
    """A LiteLLM callback that records each call's usage through a costcontrol `Client`.

    service, subject, job, tags: the events' defaults. Per call, LiteLLM's metadata
    (`metadata={...}` in the SDK, the proxy's request metadata) may set `costcontrol_subject`,
    `costcontrol_job` and `costcontrol_tags` (a dict); the subject is otherwise the proxy's end user
    (`user_api_key_end_user_id`), the request's `user`, or metadata `user`. Request tags written
    `key=value` or `key:value` become tags too.

    check_scopes: the scopes the budget check asks (templates over {service}, {subject}, {model},
    {provider}; a scope whose value is empty is skipped), or a function of the request data.
    check_amount: what a call is assumed to cost when asking (default 0: refuse only a budget with
    no headroom left). fail_closed: refuse calls when costcontrol cannot be asked (default: let
    them through and log a warning); after it could not be reached, it is not asked again for
    CHECK_PAUSE_SECONDS (or its Retry-After).
    """

    def __init__(
        self,
        client: Client,
        *,
        service: str | None = None,
        subject: str | None = None,
        job: str | None = None,
        tags: Mapping[str, str] | None = None,
        check_scopes: Sequence[str] | Callable[[Mapping[str, Any]], Iterable[str]] = DEFAULT_CHECK_SCOPES,
        check_amount: Decimal | str | int = 0,
        fail_closed: bool = False,
        provider_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.service = service
        self.subject = subject
        self.job = job
        self.tags = dict(tags or {})
        self.check_scopes = check_scopes
        self.check_amount = Decimal(str(check_amount))
        self.fail_closed = fail_closed
        self.provider_names = dict(provider_names or {})
        self._team: str | None = None
        self._key_known = False
        self._check_paused_until = 0.0  # time.monotonic(): costcontrol unreachable until then

    @classmethod
    def from_env(cls, **options: Any) -> CostcontrolLogger:
        """A logger with its own Client: COSTCONTROL_URL, COSTCONTROL_API_KEY, COSTCONTROL_SERVICE."""
        url, api_key = os.environ.get("COSTCONTROL_URL"), os.environ.get("COSTCONTROL_API_KEY")
        if not url or not api_key:
            raise RuntimeError("costcontrol: set COSTCONTROL_URL and COSTCONTROL_API_KEY for the LiteLLM callback")
        client = Client(url, api_key, service=os.environ.get("COSTCONTROL_SERVICE") or None)
        return cls(client, **options)

    # --- recording ---------------------------------------------------------------------

    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, exception=None)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, exception=_exception(kwargs))

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, exception=None)  # record() never blocks

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, exception=_exception(kwargs))

    def _record(
        self, kwargs: dict[str, Any], response: Any, start_time: Any, end_time: Any, exception: BaseException | None
    ) -> None:
        try:
            event = self.event(kwargs, response, start_time, end_time, exception)
        except Exception:  # recording must never break the model call
            logger.exception("costcontrol: could not read a LiteLLM call")
            return
        if event is None:
            return
        try:
            self.client.record(**event)
        except (ValueError, TypeError) as exc:  # refused (e.g. another service): kept, as a server rejection is
            logger.error("costcontrol: could not record a LiteLLM call: %s", exc)
            self.client._dead_letter_refused(event, exc)
        except Exception:
            logger.exception("costcontrol: could not record a LiteLLM call")

    def event(
        self,
        kwargs: Mapping[str, Any],
        response: Any,
        start_time: Any,
        end_time: Any,
        exception: BaseException | None = None,
    ) -> dict[str, Any] | None:
        """The costcontrol event for one call LiteLLM reported; None when nothing is to be recorded."""
        logged = kwargs.get("standard_logging_object") or {}
        if exception is None and (logged.get("cache_hit") or kwargs.get("cache_hit")):
            return None  # served from LiteLLM's cache: the provider billed nothing
        if isinstance(exception, litellm.BudgetExceededError):
            return None  # refused before the provider was called
        provider = self._provider(kwargs, logged)
        call_id = kwargs.get("litellm_call_id") or logged.get("litellm_call_id") or logged.get("id")
        operation = OPERATIONS.get(str(kwargs.get("call_type") or logged.get("call_type") or ""), "chat")
        metadata = _metadata(kwargs)
        event: dict[str, Any] = {
            "provider": provider,
            "model": _model(kwargs, logged, response, provider, failed=exception is not None),
            "operation": operation,
            "outcome": "success" if exception is None else _outcome(exception),
            **self._attribution(kwargs, metadata, logged),
        }
        if isinstance(end_time, datetime):
            # LiteLLM's times are naive local datetimes: astimezone() reads them as such.
            event["occurred_at"] = end_time.astimezone(UTC)
        duration = _seconds(start_time, end_time)
        if duration is not None:
            event["duration_ms"] = max(0, int(duration * 1000))
        if call_id:
            suffix = "" if exception is None else f"/{event['outcome']}"
            event["idempotency_key"] = f"litellm/{call_id}{suffix}"
        reported = _reported_cost(kwargs.get("response_cost", logged.get("response_cost")))
        if reported is not None:
            event["reported_amount"], event["reported_by"] = reported, "litellm"
        if exception is None:
            quantities = litellm_quantities(operation, _get(response, "usage"), response, dict(kwargs))
            if quantities is None:
                event["usage_unavailable"] = True
            else:
                event.update(quantities)
        return event

    def _provider(self, kwargs: Mapping[str, Any], logged: Mapping[str, Any]) -> str:
        name = kwargs.get("custom_llm_provider") or logged.get("custom_llm_provider")
        if not name:
            name = _get(_get(kwargs.get("litellm_params"), "metadata"), "custom_llm_provider")
        name = str(name or "unknown").lower()
        return self.provider_names.get(name, name)

    def _attribution(
        self, kwargs: Mapping[str, Any], metadata: Mapping[str, Any], logged: Mapping[str, Any]
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.service:
            fields["service"] = self.service
        subject = _first_text(
            metadata.get("costcontrol_subject"),
            metadata.get("user_api_key_end_user_id"),
            logged.get("end_user"),
            kwargs.get("user"),
            metadata.get("user"),
            self.subject,
        )
        if subject:
            fields["subject"] = subject[:200]
        job = _first_text(metadata.get("costcontrol_job"), self.job)
        if job:
            fields["job"] = job[:200]
        tags = dict(self.tags)
        request_tags = metadata.get("tags") or logged.get("request_tags") or ()
        if isinstance(request_tags, list | tuple):
            for tag in request_tags:
                if isinstance(tag, str):
                    key, sep, value = tag.partition("=") if "=" in tag else tag.partition(":")
                    if sep:
                        tags.setdefault(key.strip(), value.strip())
        own = metadata.get("costcontrol_tags")
        if isinstance(own, Mapping):
            tags.update({str(k): str(v) for k, v in own.items()})
        tags = _valid_tags(tags)
        if tags:
            fields["tags"] = tags
        return fields

    # --- the budget check --------------------------------------------------------------

    def scopes_for(self, data: Mapping[str, Any], user_api_key_dict: Any = None) -> list[str]:
        """The scopes to ask before a call with this request data (team keys: their team's copies)."""
        if callable(self.check_scopes):
            return [scope for scope in self.check_scopes(data) if scope]
        metadata = {
            **(data.get("litellm_metadata") if isinstance(data.get("litellm_metadata"), Mapping) else {}),
            **(data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}),
        }
        self._learn_key()
        values = {
            "service": _first_text(self.service, self.client.service, self.client.key_service) or "",
            "subject": _first_text(
                metadata.get("costcontrol_subject"),
                getattr(user_api_key_dict, "end_user_id", None),
                metadata.get("user_api_key_end_user_id"),
                data.get("user"),
                metadata.get("user"),
                self.subject,
            )
            or "",
            "model": str(data.get("model") or ""),
            "provider": "",
        }
        model = values["model"]
        if "/" in model:
            values["provider"], values["model"] = model.split("/", 1)
        scopes = []
        for template in self.check_scopes:
            needed = [name for name in values if "{" + name + "}" in template]
            if any(not values[name] for name in needed):
                continue
            scope = template.format(**values)
            if self._team and not scope.startswith("team:"):
                scope = f"team:{self._team}" if scope == "global" else f"team:{self._team}/{scope}"
            scopes.append(scope)
        return list(dict.fromkeys(scopes))

    def _learn_key(self) -> None:
        """The key's service and team, asked once: a team's key checks its team's scopes only."""
        if self._key_known:
            return
        try:
            key = self.client.key()
        except CostcontrolError as exc:
            logger.warning("costcontrol: could not read the API key's service and team: %s", exc)
            return
        self._key_known = True
        team = key.get("team") if isinstance(key, dict) else None
        self._team = team if isinstance(team, str) and team else None

    def check_budget(
        self, data: Mapping[str, Any] | None = None, *, user_api_key_dict: Any = None, **request: Any
    ) -> None:
        """Ask costcontrol before a call; raise litellm.BudgetExceededError when a hard-limit budget of
        the call's scopes has no headroom. From the SDK: `cc_logger.check_budget(model=..., user=...)`
        (or the request dict) before `litellm.completion(...)`. Blocking (one HTTP call per scope)."""
        data = {**(data or {}), **request}
        if time.monotonic() < self._check_paused_until:
            self._unchecked("costcontrol", Unavailable("costcontrol was unreachable moments ago", code="unreachable"))
            return
        for scope in self.scopes_for(data, user_api_key_dict):
            try:
                answer = self.client.check(scope, self.check_amount)
            except CostcontrolError as exc:
                if isinstance(exc, Unavailable):
                    pause = max(CHECK_PAUSE_SECONDS, exc.retry_after or 0)
                    self._check_paused_until = time.monotonic() + pause
                self._unchecked(scope, exc)
                if isinstance(exc, Unavailable):
                    return
                continue
            refused = _refusal(answer)
            if refused is not None:
                budget, message = refused
                error = litellm.BudgetExceededError(
                    current_cost=float(Decimal(str(budget.get("spent") or 0))),
                    max_budget=float(Decimal(str(budget.get("limit") or 0))),
                    message=f"costcontrol: {message} (scope {scope})",
                    entity_type="costcontrol_budget",
                    entity_id=str(budget.get("name") or scope),
                )
                error.costcontrol_budget = budget  # type: ignore[attr-defined]
                raise error

    def _unchecked(self, scope: str, exc: CostcontrolError) -> None:
        """A scope that could not be asked: refused (fail_closed) or let through with a warning."""
        if self.fail_closed:
            raise litellm.BudgetExceededError(
                current_cost=0.0, max_budget=0.0, message=f"costcontrol could not check {scope}: {exc}"
            ) from exc
        logger.warning("costcontrol: could not check the budgets of %s (call let through): %s", scope, exc)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """The proxy's hook: the budget check, off the event loop (the client's calls block)."""
        await asyncio.to_thread(self.check_budget, data, user_api_key_dict=user_api_key_dict)
        return None


def litellm_quantities(
    operation: str, usage: Any, response: Any = None, request: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ledger's quantities from LiteLLM's (OpenAI-shaped) usage: `openai_quantities`, plus what
    LiteLLM carries over from other providers (Anthropic's 1-hour cache writes, web searches).
    None when the call reported no usage: a chat usage of 0 tokens in and out is LiteLLM's stand-in
    for a stream whose provider sent none (OpenAI without stream_options.include_usage)."""
    if usage is None:
        return None
    if (
        operation == "chat"
        and not _count(_get(usage, "prompt_tokens"))
        and not _count(_get(usage, "completion_tokens"))
    ):
        if not _count(_get(usage, "input_tokens")) and not _count(_get(usage, "output_tokens")):
            return None
    quantities = openai_quantities(operation, usage, response, request or {})
    if quantities is None:
        return None
    details = _get(usage, "prompt_tokens_details")
    write_1h = _count(_get(_get(details, "cache_creation_token_details"), "ephemeral_1h_input_tokens"))
    if write_1h:
        quantities["cache_write_1h_tokens"] = write_1h
        left = _count(quantities.get("cache_write_tokens")) - write_1h
        if left > 0:
            quantities["cache_write_tokens"] = left
        else:
            quantities.pop("cache_write_tokens", None)
    searches = _count(_get(details, "web_search_requests"))
    if searches:
        quantities["web_searches"] = searches
    for name in ("service_tier", "inference_geo", "speed"):
        value = _get(usage, name)
        if isinstance(value, str) and value and name not in quantities:
            quantities["region" if name == "inference_geo" else name] = value
    return quantities


def _refusal(answer: Any) -> tuple[dict[str, Any], str] | None:
    """(the budget, why) when a check's answer refuses the call: not allowed, or a hard limit with
    nothing available."""
    if not isinstance(answer, Mapping):
        return None
    budgets = [b for b in answer.get("budgets") or () if isinstance(b, Mapping)]
    for budget in budgets:
        if budget.get("hard_limit") and (
            budget.get("allowed") is False or _decimal(budget.get("available"), Decimal(1)) <= 0
        ):
            return dict(budget), (
                f"budget {budget.get('name')!r} has no headroom: {budget.get('available')} "
                f"{budget.get('currency') or ''} of {budget.get('limit')} available".replace("  ", " ")
            )
    if answer.get("allowed") is False:
        return {}, "a hard-limit budget has no headroom"
    return None


def _exception(kwargs: Mapping[str, Any]) -> BaseException:
    exc = kwargs.get("exception")
    return exc if isinstance(exc, BaseException) else Exception(str(exc or "unknown error"))


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, litellm.RateLimitError) or getattr(exc, "status_code", None) == 429:
        return "rate_limited"
    return "error"


def _metadata(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """LiteLLM's metadata of the call: the standard logging object's, then the request's over it."""
    merged: dict[str, Any] = {}
    logged = (kwargs.get("standard_logging_object") or {}).get("metadata")
    if isinstance(logged, Mapping):
        merged.update(logged)
    params = kwargs.get("litellm_params")
    for name in ("litellm_metadata", "metadata"):
        value = _get(params, name)
        if isinstance(value, Mapping):
            merged.update({k: v for k, v in value.items() if v is not None})
    return merged


def _model(kwargs: Mapping[str, Any], logged: Mapping[str, Any], response: Any, provider: str, *, failed: bool) -> str:
    """The provider's answer (gpt-4o-2024-08-06) where LiteLLM kept it, else the model called."""
    hidden = getattr(response, "_hidden_params", None) if response is not None else None
    candidates = [
        _get(hidden, "provider_response_model"),
        None if failed or kwargs.get("stream") else _get(response, "model"),
        kwargs.get("model"),
        logged.get("model"),
    ]
    model = _first_text(*candidates) or "unknown"
    prefix = f"{provider}/"
    return model[len(prefix) :] if model.startswith(prefix) and len(model) > len(prefix) else model


_NANO = Decimal("1e-9")  # the ledger's places


def _reported_cost(value: Any) -> Decimal | None:
    """LiteLLM's response_cost (a float) as a decimal of the ledger's 9 places; None if it is no cost."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        cost = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    if not cost.is_finite() or cost < 0 or cost > 10**9:
        return None
    return cost.quantize(_NANO)


def _seconds(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return (end - start).total_seconds()
    if isinstance(start, int | float) and isinstance(end, int | float):
        return float(end - start)
    return None


def _first_text(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _decimal(value: Any, default: Decimal) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return default


def _valid_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags the server takes (a bad one would get the whole event rejected): others are dropped."""
    valid: dict[str, str] = {}
    for key, value in tags.items():
        key = str(key).strip()
        if not key or "=" in key or len(key) > _TAG_KEY_MAX:
            logger.debug("costcontrol: tag %r dropped (1-%d characters without '=')", key, _TAG_KEY_MAX)
            continue
        valid[key] = str(value).strip()[:_TAG_VALUE_MAX]
        if len(valid) >= _TAGS_MAX:
            break
    return valid


_proxy_instance: CostcontrolLogger | None = None


def __getattr__(name: str) -> Any:
    """`proxy_handler_instance`, what the LiteLLM proxy's `callbacks:` loads: built on first use from
    the environment (COSTCONTROL_URL, COSTCONTROL_API_KEY, COSTCONTROL_SERVICE), so that importing
    this module starts nothing."""
    global _proxy_instance
    if name == "proxy_handler_instance":
        if _proxy_instance is None:
            _proxy_instance = CostcontrolLogger.from_env()
        return _proxy_instance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
